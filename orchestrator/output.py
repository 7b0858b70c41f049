"""The flow-run process's output at the file-descriptor level.

File descriptors 1 and 2 become pipes read by one thread each, so everything written to them --
``print``, ``sys.stdout.buffer``, a subprocess given ``stdout=sys.stdout`` or simply inheriting the
descriptors, a C extension's ``printf`` -- reaches the run's logs line by line and, byte for byte,
the process's original stdout / stderr (the worker's pipe, or a terminal): the console. Bytes
that are not UTF-8 are kept, escaped (``\\xff``); ANSI colour codes are kept as they are.

``sys.stdout`` / ``sys.stderr`` are replaced by ordinary line-buffered text streams on descriptors
1 and 2 (``.buffer``, ``.fileno()``), writing what they cannot encode as backslash escapes rather
than failing the flow. Before a state report, ``sync`` waits until the threads have read every byte
written so far, so the API never has a final state without the lines that came before it.
"""

from __future__ import annotations

import contextlib
import functools
import fcntl
import io
import os
import select
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import TextIO

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024  # a longer line (a progress bar redrawn with \r) is shipped in pieces
SYNC_SECONDS = 5.0  # the longest a report waits for the readers to catch up
DRAIN_SECONDS = 1.0  # after the run, what children that outlive it still write is read this long

_active: OutputCapture | None = None


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


class _Reader:
    """One descriptor turned into a pipe, its reading thread, and the line being assembled."""

    def __init__(self, fd: int, wake: int, on_line: Callable[[str], None]) -> None:
        self.fd, self.wake, self.on_line = fd, wake, on_line
        self.console = Console(_dup_or_devnull(fd))
        self.read_end, write_end = os.pipe()
        os.dup2(write_end, fd)  # inheritable: children write into the pipe too
        os.close(write_end)
        self.partial = bytearray()
        self.busy = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name=f"output-fd{fd}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        drain_until: float | None = None
        while True:
            waiting = [self.read_end] if drain_until is not None else [self.read_end, self.wake]
            timeout = None if drain_until is None else max(0.0, drain_until - time.monotonic())
            ready, _, _ = select.select(waiting, [], [], timeout)
            if self.read_end not in ready:
                if drain_until is not None:
                    break  # drained: a child still holding the pipe is not waited for
                drain_until = time.monotonic() + DRAIN_SECONDS  # woken: read what is there, then stop
                continue
            with self.changed:
                self.busy = True
            try:
                data = os.read(self.read_end, CHUNK)  # EINTR is retried by Python itself
            except OSError:
                data = b""
            if data:
                self.console.write_bytes(data)
                self._split(data)
            with self.changed:
                self.busy = False
                self.changed.notify_all()
            if data == b"":
                break  # every writer closed it
        with self.changed:
            self._ship_partial()
        os.close(self.read_end)

    def _split(self, data: bytes) -> None:
        self.partial += data
        start = 0
        while (end := self.partial.find(b"\n", start)) >= 0:
            self._ship(self.partial[start:end])
            start = end + 1
        del self.partial[:start]
        while len(self.partial) > MAX_LINE:
            self._ship(self.partial[:MAX_LINE])
            del self.partial[:MAX_LINE]

    def _ship(self, line: bytes | bytearray) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        # This thread must live whatever the shipper does: if it stopped reading, the pipe would fill
        # and the flow would block on its next write.
        try:
            self.on_line(bytes(line).decode("utf-8", "backslashreplace"))
        except Exception:  # noqa: BLE001
            self.console.write_bytes(b"[orchestrator] a line of output could not be shipped\n")

    def _ship_partial(self) -> None:
        if self.partial:
            self._ship(self.partial)
            self.partial.clear()

    def sync(self, deadline: float, partial: bool) -> None:
        """Wait until every byte written so far has been read and shipped (or the deadline)."""
        with self.changed:
            while self.thread.is_alive() and (self.busy or _pending(self.read_end)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(remaining)
            if partial and not self.busy:
                self._ship_partial()


class OutputCapture:
    """Descriptors 1 and 2 captured from ``start`` to ``stop``; ``on_line(fd, text)`` per line."""

    def __init__(self, on_line: Callable[[int, str], None]) -> None:
        self.on_line = on_line
        self.readers: list[_Reader] = []
        self._saved: tuple[TextIO | None, TextIO | None] = (None, None)
        self._wake_read, self._wake_write = -1, -1

    @property
    def console_err(self) -> Console:
        """The original stderr, for what must reach the console but not the logs twice."""
        return self.readers[1].console

    def start(self) -> None:
        global _active
        _flush_python_streams()
        self._wake_read, self._wake_write = os.pipe()
        self.readers = [_Reader(fd, self._wake_read, functools.partial(self.on_line, fd)) for fd in (1, 2)]
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _text_stream(1)
        sys.stderr = _text_stream(2)
        _active = self

    def sync(self, final: bool = False) -> None:
        """Ship everything written so far; ``final`` also flushes C's stdio buffers (``os._exit``
        follows, which would drop them) and ships a last line that has no newline."""
        if final:
            _flush_c_stdio()  # first: what C code buffered was most likely written before Python's last line
        _flush_python_streams()
        deadline = time.monotonic() + SYNC_SECONDS
        for reader in self.readers:
            reader.sync(deadline, partial=final)

    def stop(self) -> None:
        global _active
        self.sync(final=True)
        _active = None
        ours = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._saved
        for stream in ours:
            with contextlib.suppress(OSError, ValueError):
                stream.close()  # closefd=False: flushes only
        for reader in self.readers:  # the original descriptors back; the pipes' write ends close
            os.dup2(reader.console.fd, reader.fd)
        os.write(self._wake_write, b"x")  # readers whose pipe a lingering child holds: stop soon
        for reader in self.readers:
            reader.thread.join(timeout=DRAIN_SECONDS + 1)
            os.close(reader.console.fd)
            reader.console.broken = True
        os.close(self._wake_write)
        os.close(self._wake_read)


def sync_output(final: bool = False) -> None:
    """Before a state report: the active capture's output shipped (or just Python's streams flushed)."""
    if _active is not None:
        _active.sync(final)
    else:
        _flush_python_streams()


def console_error(text: str) -> None:
    """A line for the console only (never the logs): the capture's original stderr, if any."""
    if _active is not None:
        _active.console_err.write(text + "\n")
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(text, file=sys.__stderr__, flush=True)


def _text_stream(fd: int) -> TextIO:
    return open(fd, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115


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


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _flush_c_stdio() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
