"""Recording task runs: each task run is a ``TaskRunRecord`` whose every change is queued with the
``TaskRunShipper``; one thread sends what changed to the API in batches (``POST
/api/flow_runs/{id}/task_runs`` from the flow-run process; ``POST /api/task_runs`` for tasks called
outside any flow, ``sdk/standalone.py``), so a task never waits on the network."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import InvalidInput, NotFound
from orchestrator.shipping import MAX_BATCH, BatchShipper
from orchestrator.states import FINAL_STATES
from orchestrator.storable import escaped

if TYPE_CHECKING:
    from orchestrator.client import Client

RETRY_SECONDS = 2.0  # a failed heartbeat is sent again this soon (the reaper allows for it: RETRY_DELAY_MAX_SECONDS)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class TaskRunRecord:
    """One task run as this process sees it. Hooks receive it as the ``task_run``."""

    name: str
    task_name: str
    version: str | None
    tags: list[str]
    max_retries: int
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    state_type: str = "PENDING"
    state_name: str = "Pending"
    state_message: str | None = None
    run_count: int = 0
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    created: dt.datetime = field(default_factory=_now)

    def running(self) -> None:
        self.run_count += 1
        self.start_time = self.start_time or _now()
        self._set("RUNNING", "Running", None)

    def awaiting_retry(self, message: str) -> None:
        self._set("SCHEDULED", "AwaitingRetry", message)

    def finished(self, state_type: str, state_name: str, message: str | None = None) -> None:
        self.end_time = _now()
        self._set(state_type, state_name, message)

    def _set(self, state_type: str, state_name: str, message: str | None) -> None:
        self.state_type, self.state_name = state_type, state_name
        self.state_message = None if message is None else escaped(message[:4000])

    def to_wire(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name[:255], "task_name": self.task_name[:255],
                "version": self.version and self.version[:255], "tags": self.tags, "state_type": self.state_type,
                "state_name": self.state_name, "state_message": self.state_message, "run_count": self.run_count,
                "max_retries": self.max_retries, "created": self.created.isoformat(),
                "start_time": self.start_time and self.start_time.isoformat(),
                "end_time": self.end_time and self.end_time.isoformat()}


class TaskRunShipper(BatchShipper):
    """With ``holder`` (tasks outside any flow), the thread also keeps this program's lease: one
    heartbeat per period while any of its task runs is open, whatever their number. A program
    killed stops beating, and the server's reaper marks its open task runs CRASHED."""

    def __init__(self, client: Client, flow_run_id: uuid.UUID | None, *, holder: uuid.UUID | None = None,
                 heartbeat_seconds: float = 10.0) -> None:
        super().__init__("task-run-shipper")
        self.client = client
        self.flow_run_id = flow_run_id
        self.holder = holder
        self.heartbeat_seconds = heartbeat_seconds  # until the server's first answer says its own
        self._pending: dict[str, dict[str, Any]] = {}  # task run id -> its newest state: one entry per run
        self._open: set[str] = set()  # ids of the task runs not final yet (kept only with a holder)
        self._next_beat = 0.0  # monotonic time of the next heartbeat; 0: at the first open run
        self._beaten = False  # a heartbeat was recorded: the lease is ended at exit
        self._failing = False  # the last heartbeat failed (said once per stretch of failures)

    def put(self, record: TaskRunRecord) -> None:
        entry = record.to_wire()
        with self._lock:
            self._pending[entry["id"]] = entry
            size = len(self._pending)
            if self.holder is not None:
                if record.state_type in FINAL_STATES:
                    self._open.discard(entry["id"])
                else:
                    self._open.add(entry["id"])
        self.queued(size)

    def _ship(self) -> None:
        with self._lock:
            batch, self._pending = list(self._pending.values()), {}
            beat_due = bool(self._open) and time.monotonic() >= self._next_beat
        if beat_due:
            self._beat()
        for start in range(0, len(batch), MAX_BATCH):
            try:
                self.client.write_task_runs(self.flow_run_id, batch[start:start + MAX_BATCH], holder=self.holder)
            except InvalidInput as error:  # refused for good: sending it again would change nothing
                self._say(f"[orchestrator] task runs refused by the API: {error}")
                continue
            except Exception as error:  # never let recording break the flow; try again next time
                with self._lock:
                    for entry in batch[start:]:
                        self._pending.setdefault(entry["id"], entry)  # unless a newer state came
                self._say(f"[orchestrator] could not record {len(batch) - start} task runs: {error}")
                return

    def _beat(self) -> None:
        assert self.holder is not None
        try:
            self.heartbeat_seconds = self.client.task_run_holder_heartbeat(self.holder)
        except NotFound:  # a server older than these leases: it records the task runs, never crashes them
            self._next_beat = float("inf")
            return
        except Exception as error:  # noqa: BLE001 - never break the tasks; beat again soon, said once
            self._next_beat = time.monotonic() + min(RETRY_SECONDS, self.heartbeat_seconds)
            if not self._failing:
                self._say(f"[orchestrator] could not renew the lease of this program's task runs: {error}")
            self._failing = True
            return
        self._beaten, self._failing = True, False
        self._next_beat = time.monotonic() + self.heartbeat_seconds

    def stop(self) -> None:
        """Send what is queued; then end the lease (a task run still open is judged as a killed one's)."""
        super().stop()
        if self.holder is not None and self._beaten:
            with contextlib.suppress(Exception):
                self.client.release_task_run_holder(self.holder)

    @staticmethod
    def _say(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(text, file=sys.__stderr__)

