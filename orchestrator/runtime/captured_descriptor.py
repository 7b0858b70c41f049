"""One captured descriptor of the flow-run process (1 or 2): the pipe that replaces it, the console
(its original target) it forwards to, and the line assembler fed by both the pipe's reader and
Python-level writes. How they fit together, and why: ``orchestrator/runtime/output.py``."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import struct
import termios
import threading
import time
from collections.abc import Callable

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024  # a longer line (a progress bar redrawn with \r) is shipped in pieces
PIPE_SIZE = 1024 * 1024
CATCH_UP_SECONDS = 1.0  # the longest a Python-level write waits for the reader to empty the pipe


class Console(io.TextIOBase):
    """Text written straight to a descriptor (the original stdout or stderr), until it breaks: when
    the worker reading it dies, the flow goes on (its output still reaches the API)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False

    def write(self, text: str) -> int:
        self.write_bytes(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.broken:
            try:
                view = view[os.write(self.fd, view):]
            except OSError:  # EPIPE, EBADF: nobody reads any more
                self.broken = True

    def isatty(self) -> bool:
        return False


class CapturedDescriptor:
    """One descriptor turned into a pipe (read by the capture's reader thread), the console it
    forwards to, and the line being assembled from both the pipe and Python-level writes."""

    def __init__(self, fd: int, on_line: Callable[[str], None], reader: threading.Thread) -> None:
        self.fd, self.on_line, self.thread = fd, on_line, reader
        self.console = Console(_dup_or_devnull(fd))
        self.read_end, write_end = os.pipe()
        # C code that writes while holding the GIL cannot be read by the reader thread (it needs the
        # GIL) until it returns: past the pipe's capacity it would block for good. 1 MiB instead of
        # 64 KiB (Linux's limit for a user, /proc/sys/fs/pipe-max-size) makes that much rarer.
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.dup2(write_end, fd)  # inheritable: children write into the pipe too
        os.close(write_end)
        self.partial = bytearray()
        # Serialises console writes and line assembly between the reader and Python writers, so
        # both see the same order. Re-entrant: a signal handler may print in the middle of a print.
        self.lock = threading.RLock()
        self.busy = False
        self.changed = threading.Condition()
        self.forked = False  # in a child forked from this process (multiprocessing's default)
        self.done = False  # every writer closed the pipe: read to its end, and closed

    def write(self, data: bytes) -> None:
        """A Python-level write: to the console now, in the caller's thread, and into the logs."""
        if self.forked:  # no reader, no shipper here: the parent's reader takes it from the pipe
            _write_all(self.fd, data)
            return
        self.catch_up()  # what the pipe holds was written first
        with self.lock:
            self.console.write_bytes(data)
            self._feed(data)

    def after_fork_in_child(self) -> None:
        # The locks may have been held by a thread that does not exist here.
        self.lock, self.changed, self.forked = threading.RLock(), threading.Condition(), True

    def catch_up(self) -> None:
        """Return once the reader has forwarded what the pipe holds (at most ``CATCH_UP_SECONDS``)."""
        # The pipe is asked before ``busy`` is read: the reader sets ``busy`` before it empties the
        # pipe, so one of the two shows bytes in flight. Cheap when neither does: one ioctl.
        if not self.done and (_pending(self.read_end) or self.busy) \
                and threading.current_thread() is not self.thread and not self.forked:
            self._catch_up(time.monotonic() + CATCH_UP_SECONDS)

    def read_once(self) -> bool:
        """In the reader thread, the pipe being readable: forward one chunk. False at its end."""
        with self.changed:
            self.busy = True
        try:
            data = os.read(self.read_end, CHUNK)  # EINTR is retried by Python itself
        except OSError:
            data = b""
        if data:
            with self.lock:
                self.console.write_bytes(data)
                self._feed(data)
        with self.changed:
            self.busy = False
            self.changed.notify_all()
        return data != b""

    def finish(self) -> None:
        """In the reader thread, when it stops reading this pipe: the last partial line shipped."""
        with self.lock:
            self._ship_partial()
        with self.changed:
            self.done = True
            self.changed.notify_all()
        os.close(self.read_end)

    def _feed(self, data: bytes) -> None:
        """Under ``lock``. The complete lines are taken out before any is shipped: a re-entrant
        write (from a signal handler) then finds ``partial`` consistent."""
        self.partial += data
        if b"\n" not in data and len(self.partial) <= MAX_LINE:
            return
        lines = self.partial.split(b"\n")
        rest = lines.pop()
        while len(rest) > MAX_LINE:  # what stays may be exactly MAX_LINE long
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self.partial = rest
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):  # also a line that ended just past MAX_LINE
                self._ship(line[start:start + MAX_LINE])

    def _ship(self, line: bytes | bytearray) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        # The reader must live whatever the shipper does: if it stopped reading, the pipe would fill
        # and the flow would block on its next write.
        try:
            self.on_line(bytes(line).decode("utf-8", "backslashreplace"))
        except Exception:  # noqa: BLE001
            self.console.write_bytes(b"[orchestrator] a line of output could not be shipped\n")

    def _ship_partial(self) -> None:
        if self.partial:
            line, self.partial = self.partial, bytearray()
            self._ship(line)

    def _catch_up(self, deadline: float) -> None:
        """Wait until every byte in the pipe so far has been read and shipped (or the deadline)."""
        with self.changed:
            while not self.done and self.thread.is_alive() and (self.busy or _pending(self.read_end)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(remaining)

    def sync(self, deadline: float, partial: bool) -> None:
        self._catch_up(deadline)
        if partial:
            with self.lock:
                self._ship_partial()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _dup_or_devnull(fd: int) -> int:
    try:
        return os.dup(fd)
    except OSError:  # started with that descriptor closed: the console is nowhere
        return os.open(os.devnull, os.O_WRONLY)


def _pending(fd: int) -> int:
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0
