"""A flow run's liveness, kept by the process running it: its connection lease
(``services/leases.py``) and the heartbeat thread that renews it. The flow-run process keeps one
(``runtime/engine.py``), and so does a program calling a flow directly (``sdk/direct_runs.py``).

Each heartbeat is held open by the API for one period, then sent again at once. If the process
dies, its kernel closes the connection and the API knows within seconds, not after three missed
heartbeats. The first one is sent by the process's main thread as it starts (``open``), without
waiting for its answer (and, before a RUNNING report, with nothing for the API to write: the
report writes it): the lease is open from then on, while the thread that reads the answers
and beats on starts later (``start``), while the RUNNING report's answer is awaited -- off the path
to RUNNING and to the flow's code (a thread start is 0.2-4 ms of waiting for the scheduler on a
busy machine), and no first beat reaches the server beside that report.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator import schemas
    from orchestrator.client import Client
    from orchestrator.client.transport import SentRequest

log = logging.getLogger("orchestrator.engine")


class RunLease:
    """``on_answer`` is called in the heartbeat thread with the run as each heartbeat's answer
    tells it (a cancellation, a run that ended without this process)."""

    def __init__(self, client: Client, run_id: uuid.UUID, period: float,
                 on_answer: Callable[[schemas.FlowRun], None], *, infrastructure_id: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.period = period
        self.on_answer = on_answer
        # Where this process runs, said with each beat until one is answered (``run_columns.heartbeat``).
        self.infrastructure_id = infrastructure_id
        self._stop = threading.Event()
        self._first: SentRequest | None = None  # sent by ``open``, answered in the thread
        self._first_says_where = False  # whether that first beat carried ``infrastructure_id``
        self._started = False

    def open(self, *, before_running: bool = False) -> None:
        """Send the first held heartbeat now, from this thread, without waiting for its answer.

        ``before_running``: the caller reports RUNNING next, with ``infrastructure_id``
        (``runtime/engine.py``), and that report writes what this beat would (the run's heartbeat,
        where it runs): the beat only opens the lease, and the API does no database work for it
        while this process works towards RUNNING (``opening``). Until ``kept`` is called, the
        thread's beats go on saying where this process runs (an API that ignored the report's)."""
        self._first_says_where = not before_running
        self._first = self.client.open_flow_run_heartbeat(
            self.run_id, hold=self.period, infrastructure_id=None if before_running else self.infrastructure_id,
            opening=before_running)

    def kept(self) -> None:
        """Where this process runs is recorded (the RUNNING report's answer says so): no beat says it again."""
        self.infrastructure_id = None

    def is_open(self) -> bool:
        """Whether the first held heartbeat is still open at the server. When it has been answered
        (the run took longer than a heartbeat period to get to RUNNING: pull steps, a slow import)
        or could not be sent, the thread must start before RUNNING, to open the lease again."""
        first = self._first  # the thread, once started, takes it
        return first is not None and first.waiting()

    def start(self) -> None:
        """The heartbeat thread, once (later calls do nothing)."""
        if self._started:
            return
        self._started = True
        threading.Thread(target=self._loop, name="run-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from orchestrator import schemas

        while not self._stop.is_set():
            first, self._first = self._first, None
            try:
                if first is not None:
                    run = schemas.FlowRun.model_validate(first.answer())
                    said = self._first_says_where
                else:
                    run = self.client.flow_run_heartbeat(self.run_id, hold=self.period,
                                                         infrastructure_id=self.infrastructure_id)
                    said = True
                if said:
                    self.infrastructure_id = None  # said and kept
            except OrchestratorError as error:
                log.warning("heartbeat failed: %s", error)
                self._stop.wait(self.period)
                continue
            if self._stop.is_set():
                return
            self.on_answer(run)
