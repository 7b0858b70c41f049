"""Shipping a flow run's log records to the API: ``LogShipper`` batches them on one thread, so a
flow never waits on the network; ``ShipHandler`` feeds it from ``logging``. The flow-run process
ships everything its flow logs and writes (``runtime/logs.py``); a program calling a flow directly
ships the run loggers' records (``sdk/direct_runs.py``). A record logged inside a subflow run (a flow
called inside another, a run of its own) is its run's only: each handler keeps its own run's."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.sdk import running
from orchestrator.shipping import MAX_BATCH, BatchShipper
from orchestrator.storable import escaped

if TYPE_CHECKING:
    from orchestrator.client import Client

# A record's attribute (``extra=``) naming the run it belongs to, whatever flow runs at the time: a
# subflow run's own lines (its start and end) are logged while its caller's context is current.
RUN_ATTRIBUTE = "orch_flow_run_id"


def _to_stderr(text: str) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(text, file=sys.__stderr__, flush=True)


class LogShipper(BatchShipper):
    def __init__(self, client: Client | None, run_id: uuid.UUID | None, *,
                 say: Callable[[str], None] = _to_stderr) -> None:
        """``client`` and ``run_id`` may be set later, before ``start`` (a standby's, ``standby.get_ready``).
        ``say``: where a failure to ship is told (the console only: a line that would be shipped
        again would fail again)."""
        super().__init__("log-shipper")
        self.client = client
        self.run_id = run_id
        self.say = say
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
            except Exception as error:  # noqa: BLE001 - never let log shipping break the flow
                self.say(f"[orchestrator] could not ship {len(batch)} log lines: {error}")
                return


class ShipHandler(logging.Handler):
    """Each record of ``shipper``'s run, formatted as its message, to ``shipper`` (the client's own
    records excepted: shipping them would log again). A record is another run's when it names one
    (``RUN_ATTRIBUTE``) or was logged while another tracked run's flow ran (a subflow run's)."""

    def __init__(self, shipper: LogShipper) -> None:
        super().__init__(logging.DEBUG)
        self.shipper = shipper
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("orchestrator.client") or not self._of_this_run(record):
            return
        try:
            self.shipper.add(record.levelno, record.name, self.format(record), record.created)
        except Exception:  # noqa: BLE001 - logging's own way: handleError reports it
            self.handleError(record)

    def _of_this_run(self, record: logging.LogRecord) -> bool:
        named = getattr(record, RUN_ATTRIBUTE, None)
        if named is not None:
            return bool(named == self.shipper.run_id)
        current = running.current_flow()  # None: outside any flow (the process's own lines, hooks)
        return current is None or current.flow_run_id in (None, self.shipper.run_id)
