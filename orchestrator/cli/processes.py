"""The API processes of ``orch server start --processes N``: forked from the first one once it has
imported the API and checked the database, all serving the one listening socket.

Why forked, not spawned: a spawned process imports the API again (~0.5 s of CPU each), a forked one
shares the pages the imports filled (the collector is off until the fork, so they stay shared).
Nothing but the main thread runs at the fork, and no connection is open yet: each process builds
its own application (engine, broker, hub) after it.

Why one socket, not SO_REUSEPORT: the kernel hands a connection to whichever process accepts it, and
a process accepts only once its application has started, so a connection never waits on a process
that is still starting (or has stopped).

Lifetimes: the forked processes are in their own process group, so a Ctrl-C in the terminal (or a
signal to the server's process group) reaches only the first process, which passes one SIGTERM to
each (a second signal to it passes a second, which stops them at once, as it stops the first).
They get SIGTERM from the kernel if the first process dies (``PR_SET_PDEATHSIG``), even by SIGKILL.
If one of them exits on its own, the first process stops the server (a supervisor restarts it):
a server missing a process would answer with less than it was asked for, without a word.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Processes:
    """The first process's view of the others: forked, watched, stopped."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._living: set[int] = set()  # not reaped yet
        self.stopping = False
        self._lock = threading.Lock()

    def fork(self, count: int) -> int:
        """Fork ``count - 1`` processes. Returns this process's index: 0 in the first one, 1 to
        ``count - 1`` in the forked ones."""
        first = os.getpid()
        for index in range(1, count):
            pid = os.fork()
            if pid == 0:
                self.pids = []
                os.setpgid(0, 0)
                _die_with_parent(first)
                return index
            self.pids.append(pid)
        self._living = set(self.pids)
        return 0

    def watch(self, on_exit: Callable[[int, int], None]) -> None:
        """Call ``on_exit(pid, exit code)`` (on a thread) when a forked process ends while the server
        is not stopping."""
        fds = {os.pidfd_open(pid): pid for pid in self.pids}

        def run() -> None:
            while fds:
                ready, _, _ = select.select(list(fds), [], [])
                for fd in ready:
                    pid = fds.pop(fd)
                    os.close(fd)
                    code = self._reap(pid)
                    if code is not None and not self.stopping:
                        on_exit(pid, code)

        threading.Thread(target=run, name="api-processes", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM each forked process still there (a second call sends a second, which makes them
        stop at once) and wait for them, up to ``timeout``; then SIGKILL."""
        with self._lock:
            self.stopping = True
            # Signals through pidfds, opened under the lock that reaping takes: a pid alone, once
            # reaped, may be another program's by now.
            fds = {pid: fd for pid in self._living if (fd := _pidfd(pid)) is not None}
            for fd in fds.values():
                signal.pidfd_send_signal(fd, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pid, fd in fds.items():
            try:
                if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    select.select([fd], [], [])
            finally:
                os.close(fd)
            self._reap(pid)

    def _reap(self, pid: int) -> int | None:
        """The exit code of an ended process (reaped here), None if it was reaped already."""
        with self._lock:
            if pid not in self._living:
                return None
            _, status = os.waitpid(pid, 0)  # it has ended (its pidfd is readable): no wait
            self._living.discard(pid)
        return os.waitstatus_to_exitcode(status)


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when the first process ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the first process died before the request above was made
        os.kill(os.getpid(), signal.SIGTERM)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def supported() -> str | None:
    """Why this platform cannot run several API processes, or None."""
    if not hasattr(os, "fork") or not hasattr(os, "pidfd_open") or not sys.platform.startswith("linux"):
        return "several API processes need Linux (fork, pidfd)"
    return None
