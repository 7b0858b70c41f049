"""The flow-run process's output at the file-descriptor level.

Everything written to file descriptors 1 and 2 -- ``print``, ``sys.stdout.buffer``, a subprocess
given ``stdout=sys.stdout`` or simply inheriting the descriptors, a C extension's ``printf`` --
reaches the run's logs line by line and, byte for byte, the process's original stdout / stderr
(the worker's pipe, a container's log, a terminal): the console. Bytes that are not UTF-8 are
kept, escaped (``\\xff``); ANSI colour codes are kept as they are.

Two paths, so that a process that dies hard (``os._exit``, a segfault, ``abort()`` in a C
extension, the OOM killer's SIGKILL) still leaves its last words on the console, where the worker
reads them for the CRASHED message:

- Python-level writes (``sys.stdout`` / ``sys.stderr`` and their ``.buffer``) go to the console
  synchronously, in the writing thread, and into the line assembler for the logs. They are on the
  console before ``write`` returns; nothing waits in a pipe for a thread that may never run again.
- Everything else written to the descriptors (subprocesses, C code, ``os.write(1, ...)``) goes
  through a pipe that replaces descriptor 1 (and 2), both read by one thread, which forwards the
  bytes to the console and into the same assembler. Before a Python-level write, the writer waits
  for that thread to have read what the pipe holds, so console and logs keep the order of writes.
- ``faulthandler`` is enabled on the console's descriptor, not on descriptor 2: a fatal signal's
  traceback is written directly where it survives the process. At a ``Py_FatalError`` the
  interpreter writes its report to descriptor 2 itself, then flushes ``sys.stderr`` before
  ``abort()``; that flush waits for the reader, so the report reaches the console too.

A hard exit therefore loses at most what C code or a subprocess wrote in the instant before it
(bytes still in the pipe) and what C's stdio still buffered. What is lost for the run's *logs* is
the last half second of lines (shipped in batches): the worker's crash message carries the
console's last lines instead. A process that can still run Python (an exception, ``sys.exit``,
SIGTERM) ships everything before its final state.

A reader thread needs the GIL, so C code that writes while holding it is read only once it
returns; until then the pipe's capacity (raised to 1 MiB) holds what it writes, and past that the
write would block for good. Only a supervisor process would lift that limit.

Why not a supervisor (the flow-run process forking at once, the parent holding the pipes,
forwarding, shipping and exiting with the child's code)? It would lose nothing at all, but in a
container the flow-run process is PID 1 and the reader must be that parent, so it changes signals
(forwarded), exit codes, the standby processes and the sync before a final state (then across
processes). The direct path meets the bar -- what Python printed, a fatal signal's traceback and a
``Py_FatalError``'s report all survive -- with one process; its price is a ``print`` of about 10 µs
instead of 3-4 µs (a lock, a console write, an ``ioctl`` or two to see whether the pipe holds
anything written earlier).

``sys.stdout`` / ``sys.stderr`` are line-buffered text streams (``.buffer``, ``.fileno()`` 1 and
2, so a subprocess given them writes into the pipe), writing what they cannot encode as backslash
escapes rather than failing the flow. Before a state report, ``sync`` waits until the threads have
read every byte written so far, so the API never has a final state without the lines before it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import io
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from orchestrator.runtime.captured_descriptor import CapturedDescriptor, Console

SYNC_SECONDS = 5.0  # the longest a report waits for the readers to catch up
DRAIN_SECONDS = 1.0  # after the run, what children that outlive it still write is read this long

_active: OutputCapture | None = None


class _PythonWrites(io.RawIOBase):
    """The binary layer under ``sys.stdout`` / ``sys.stderr`` (their ``.buffer``): every write goes
    to the console and the line assembler at once. ``fileno()`` is the captured descriptor, so a
    subprocess given this stream writes into the pipe."""

    def __init__(self, descriptor: CapturedDescriptor, name: str) -> None:
        super().__init__()
        self._descriptor = descriptor
        self.name = name
        self.mode = "wb"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._descriptor.fd

    def flush(self) -> None:
        """Also wait for what other writers put in the descriptor's pipe to reach the console. The
        interpreter calls this at a ``Py_FatalError``, after writing its report to descriptor 2 and
        before ``abort()``: waiting here (without the GIL) lets the reader forward that report."""
        super().flush()
        self._descriptor.catch_up()

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        chunk = memoryview(data).tobytes()  # not bytes(data): bytes(5) would be five NULs, not a TypeError
        self._descriptor.write(chunk)
        return len(chunk)


class OutputCapture:
    """Descriptors 1 and 2 captured from ``start`` to ``stop``; ``on_line(fd, text)`` per line."""

    def __init__(self, on_line: Callable[[int, str], None]) -> None:
        self.on_line = on_line
        self.readers: list[CapturedDescriptor] = []
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
        # One thread reads both pipes: a thread start fewer before the flow's code (each is a wait
        # for the scheduler, 0.2-4 ms on a busy machine), and one stack fewer for the run's life.
        self._thread = threading.Thread(target=self._read_pipes, name="output-reader", daemon=True)
        self.readers = [CapturedDescriptor(fd, functools.partial(self.on_line, fd), self._thread) for fd in (1, 2)]
        self._thread.start()
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _text_stream(self.readers[0], "<stdout>")
        sys.stderr = _text_stream(self.readers[1], "<stderr>")
        # A fatal signal's traceback straight to the console: through descriptor 2 it would wait in
        # the pipe for a reader that dies with the process.
        faulthandler.enable(self.console_err.fd, all_threads=True)
        _register_fork_hook()
        _active = self

    def take_console(self, fd: int) -> None:
        """``fd`` becomes the console of both descriptors (then is closed): what ``start`` found as
        descriptors 1 and 2 when the process that started it did not have its own output yet (a
        fork server's standby before its order). The console's descriptor numbers stay, so
        ``faulthandler`` writes there too."""
        for reader in self.readers:
            os.dup2(fd, reader.console.fd)
            reader.console.broken = False
        os.close(fd)

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
                stream.close()  # flushes; later writes refused; the descriptors stay open
        for reader in self.readers:  # the original descriptors back; the pipes' write ends close
            os.dup2(reader.console.fd, reader.fd)
        # Still on for what runs after the capture (atexit handlers, threads the flow left), on the
        # original descriptor 2: the console's duplicate closes below.
        faulthandler.enable(2, all_threads=True)
        os.write(self._wake_write, b"x")  # pipes a lingering child holds: read what is there, then stop
        self._thread.join(timeout=DRAIN_SECONDS + 1)
        for reader in self.readers:
            os.close(reader.console.fd)
            reader.console.broken = True
        os.close(self._wake_write)
        os.close(self._wake_read)

    def _read_pipes(self) -> None:
        """The reader thread: forward what each pipe holds until every writer closed it, or, once
        ``stop`` wakes it, until it has been quiet for ``DRAIN_SECONDS`` (a child that outlives the
        run and still holds a pipe is not waited for)."""
        open_pipes = {reader.read_end: reader for reader in self.readers}
        drain_until: float | None = None
        while open_pipes:
            waiting = [*open_pipes] if drain_until is not None else [*open_pipes, self._wake_read]
            timeout = None if drain_until is None else max(0.0, drain_until - time.monotonic())
            ready, _, _ = select.select(waiting, [], [], timeout)
            readable = [fd for fd in ready if fd in open_pipes]
            if not readable:
                if drain_until is not None:
                    break  # drained
                drain_until = time.monotonic() + DRAIN_SECONDS  # woken: read what is there, then stop
                continue
            for fd in readable:
                if not open_pipes[fd].read_once():
                    open_pipes.pop(fd).finish()  # every writer closed it
        for reader in open_pipes.values():
            reader.finish()


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


def _text_stream(descriptor: CapturedDescriptor, name: str) -> TextIO:
    # Line-buffered: a line is one write (one console write, one lock), and a print without flush=True
    # is still on the console before the next statement.
    stream = io.TextIOWrapper(_PythonWrites(descriptor, name), encoding="utf-8",  # type: ignore[arg-type]
                              errors="backslashreplace", line_buffering=True)
    stream.mode = "w"  # type: ignore[misc]  # as open() sets it; some libraries look
    return stream


@functools.cache
def _register_fork_hook() -> None:  # once per process: a registration cannot be undone
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    if _active is not None:
        for descriptor in _active.readers:
            descriptor.after_fork_in_child()


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _flush_c_stdio() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
