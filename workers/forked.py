"""What the process worker holds of its fork server's processes (``workers/forkserver.py``): a
forked flow-run process's handle (``ForkedProcess``, as a ``subprocess.Popen``), a server forked at
the worker's start (``StartedServer``), and how a server is stopped and a child whose server died is
watched."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

COMMAND = (sys.executable, "-m", "orchestrator.engine", "--fork-server")
EXIT_UNKNOWN = -1  # a child whose fork server died before it: its exit code is lost with its parent


class ForkedProcess:
    """A flow-run process forked by the fork server: the part of ``subprocess.Popen`` the process
    worker uses. Not this process's child: its exit code comes from the server (``_exited``)."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout: IO[bytes] | None = stdout
        self.args = list(COMMAND)
        self.returncode: int | None = None
        self.exit_code_lost = False  # its fork server died before it: the code it exited with is unknown
        # It left through the engine's normal end with exit code 0: the API has its run's final
        # state, or the run needed nothing from it (``orchestrator/runtime/forkserver.py``).
        self.settled = False
        self._done = threading.Event()

    def _exited(self, code: int, *, lost: bool = False, settled: bool = False) -> None:
        if not self._done.is_set():
            self.returncode = code
            self.exit_code_lost = lost
            self.settled = settled and code == 0 and not lost
            self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class StartedServer:
    """A fork server ``orch worker start`` forked from itself at its start, with this side's end of
    its socket (``runtime.forkserver_beside.fork_server_beside``): the worker's child, as a fresh one is.
    The part of ``subprocess.Popen`` this module uses: ``pid``, ``returncode``, ``wait``, ``kill``."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self.channel = channel
        self.returncode: int | None = None
        self.adopted = False  # a process worker serves with it (and stops it); else ``close`` it

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(list(COMMAND), timeout or 0.0)
            else:
                time.sleep(0.05)  # only ``_stop`` waits with a timeout: a server told to go
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """This server unused (not a process pool, or prewarm off): it exits, and is reaped."""
        stop_server(self, self.channel)
        self.channel.close()


def stop_server(process: subprocess.Popen[bytes] | StartedServer, channel: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: the server is going anyway
        channel.shutdown(socket.SHUT_RDWR)  # the server sees its socket close and exits
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def watch_orphan(pid: int, child: ForkedProcess) -> None:
    """Wait for a child whose fork server died; its exit code went with its parent."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        child._exited(EXIT_UNKNOWN, lost=True)
        return
    except (OSError, AttributeError):  # no pidfd here (not Linux 5.3+): ask every half second instead
        while _exists(pid):
            time.sleep(0.5)
        child._exited(EXIT_UNKNOWN, lost=True)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)
    child._exited(EXIT_UNKNOWN, lost=True)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process by now: ours is gone
        return False
    return True
