"""Shipping a flow run's output to the API: a logging handler and the captured file descriptors
1 and 2 (``orchestrator.runtime.output``) feed one batching thread, so the flow never waits on the network."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from orchestrator.runtime.output import console_error
from orchestrator.shipping import MAX_BATCH, BatchShipper
from orchestrator.storable import escaped

if TYPE_CHECKING:
    from orchestrator.client import Client


class LogShipper(BatchShipper):
    def __init__(self, client: Client | None, run_id: uuid.UUID | None) -> None:
        """``client`` and ``run_id`` may be set later, before ``start`` (a standby's, ``standby.get_ready``)."""
        super().__init__("log-shipper")
        self.client = client
        self.run_id = run_id
        self._buffer: list[dict[str, Any]] = []

    def add(self, level: int, name: str, message: str, created: float | None = None) -> None:
        when = dt.datetime.fromtimestamp(created, dt.UTC) if created else dt.datetime.now(dt.UTC)
        with self._lock:
            self._buffer.append({"timestamp": when.isoformat(), "level": level, "name": escaped(name),
                                 "message": escaped(message)})
            size = len(self._buffer)
        self.queued(size)

    def _ship(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        for start in range(0, len(batch), MAX_BATCH):
            try:
                assert self.client is not None and self.run_id is not None, "shipped before the run was known"
                self.client.write_logs(self.run_id, batch[start:start + MAX_BATCH])
            except Exception as error:  # never let log shipping break the flow
                # To the console only: through descriptor 2 this line would be shipped (and fail) again.
                console_error(f"[orchestrator] could not ship {len(batch)} log lines: {error}")
                return


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


class RunOutput:
    """Ship everything the flow logs, and everything written to file descriptors 1 and 2 (by the
    flow, its subprocesses or C code: ``orchestrator.runtime.output``), from ``start`` to ``stop``;
    all of it still reaches the console.

    A fork server's standby starts it before its order comes (``standby.get_ready``): the
    pipes, the reader thread and the streams are then set up off the run's path, while its worker
    waits for the claim, and the order's pipe becomes the console with ``take_console``."""

    def __init__(self, shipper: LogShipper) -> None:
        from orchestrator.runtime.output import OutputCapture

        levels = {1: (logging.INFO, "stdout"), 2: (logging.WARNING, "stderr")}
        self.capture = OutputCapture(lambda fd, text: shipper.add(levels[fd][0], levels[fd][1], text))
        self._handler = _ShipHandler(shipper)
        self._console: logging.Handler | None = None
        self._old_level = logging.NOTSET

    def start(self) -> None:
        self.capture.start()
        # Log records reach the console through the original stderr, not descriptor 2: through the
        # pipe they would come back as a second, "stderr" copy in the logs.
        self._console = logging.StreamHandler(self.capture.console_err)
        self._console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        self._old_level = root.level
        root.addHandler(self._handler)
        root.addHandler(self._console)
        root.setLevel(logging.INFO)

    def take_console(self, fd: int) -> None:
        """``fd`` (then closed) is the console from now on, in place of the original stdout and stderr."""
        self.capture.take_console(fd)

    def stop(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self._console is not None:
            root.removeHandler(self._console)
        root.setLevel(self._old_level)
        self.capture.stop()


@contextlib.contextmanager
def capture_output(shipper: LogShipper, started: RunOutput | None = None) -> Iterator[None]:
    """``RunOutput`` while the block runs; ``started``: one a standby started already."""
    output = started
    if output is None:
        output = RunOutput(shipper)
        output.start()
    try:
        yield
    finally:
        output.stop()
