"""Shipping a flow run's output to the API: a logging handler and stdout/stderr tees feed one
batching thread, so the flow never waits on the network."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.storable import escaped

if TYPE_CHECKING:
    from orchestrator.client import Client

FLUSH_SECONDS = 0.5
MAX_BATCH = 500


class LogShipper:
    def __init__(self, client: Client, run_id: uuid.UUID) -> None:
        self.client = client
        self.run_id = run_id
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="log-shipper", daemon=True)

    def add(self, level: int, name: str, message: str, created: float | None = None) -> None:
        when = dt.datetime.fromtimestamp(created, dt.timezone.utc) if created else dt.datetime.now(dt.timezone.utc)
        with self._lock:
            self._buffer.append({"timestamp": when.isoformat(), "level": level, "name": escaped(name),
                                 "message": escaped(message)})
            full = len(self._buffer) >= MAX_BATCH
        if full:
            self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        for start in range(0, len(batch), MAX_BATCH):
            try:
                self.client.write_logs(self.run_id, batch[start:start + MAX_BATCH])
            except Exception as error:  # never let log shipping break the flow
                with contextlib.suppress(OSError, ValueError):  # stderr gone with the worker: say nothing
                    print(f"[orchestrator] could not ship {len(batch)} log lines: {error}", file=sys.__stderr__)
                return

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


class _ShipHandler(logging.Handler):
    def __init__(self, shipper: LogShipper) -> None:
        super().__init__(logging.DEBUG)
        self.shipper = shipper
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("orchestrator.client"):
            return
        try:
            self.shipper.add(record.levelno, record.name, self.format(record), record.created)
        except Exception:
            self.handleError(record)


class _Console(io.TextIOBase):
    """The process's real stdout or stderr (a pipe the worker reads), written to until it breaks:
    when the worker dies, the flow goes on (its output still reaches the API) instead of failing
    on its next print with BrokenPipeError."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)
            except (OSError, ValueError):  # broken pipe, or closed
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


class _Tee(io.TextIOBase):
    """Writes through to the real stream and ships each complete line."""

    def __init__(self, stream: _Console, shipper: LogShipper, name: str, level: int) -> None:
        self.stream, self.shipper, self.name, self.level = stream, shipper, name, level
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.shipper.add(self.level, self.name, line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        if self._partial:
            self.shipper.add(self.level, self.name, self._partial)
            self._partial = ""

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextlib.contextmanager
def capture_output(shipper: LogShipper) -> Iterator[None]:
    """Ship everything the flow prints or logs while the block runs."""
    handler = _ShipHandler(shipper)
    out, err = sys.stdout, sys.stderr
    console_out, console_err = _Console(out), _Console(err)
    console = logging.StreamHandler(console_err)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    sys.stdout = _Tee(console_out, shipper, "stdout", logging.INFO)  # type: ignore[assignment]
    sys.stderr = _Tee(console_err, shipper, "stderr", logging.WARNING)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err
        root.removeHandler(handler)
        root.removeHandler(console)
        root.setLevel(old_level)
