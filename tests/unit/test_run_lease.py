"""``RunLease`` before a RUNNING report (``runtime/engine.py``): its first beat only opens the lease
(``opening``, no infrastructure id: the report says it), and its thread says where the process runs
with its next beat unless the report's answer showed it kept (an API older than that report's
``infrastructure_id``). A stand-in client records what each beat sent."""

from __future__ import annotations

import json
import queue
import uuid
from typing import Any

from orchestrator import handoff, schemas
from orchestrator.sdk.run_lease import RunLease

RUN = json.loads(handoff.rehearsal_text())["flow_run"]


class Sent:
    def __init__(self, answered: queue.Queue[dict[str, Any]]) -> None:
        self.answered = answered

    def waiting(self) -> bool:
        return self.answered.empty()

    def answer(self) -> dict[str, Any]:
        return self.answered.get(timeout=10)


class Client:
    def __init__(self) -> None:
        self.first_answer: queue.Queue[dict[str, Any]] = queue.Queue()
        self.beats: queue.Queue[dict[str, Any]] = queue.Queue()
        self.opened: dict[str, Any] = {}

    def open_flow_run_heartbeat(self, run_id: uuid.UUID, **sent: Any) -> Sent:
        self.opened = sent
        return Sent(self.first_answer)

    def flow_run_heartbeat(self, run_id: uuid.UUID, **sent: Any) -> schemas.FlowRun:
        self.beats.put(sent)
        return schemas.FlowRun.model_validate(RUN)


def lease_on(client: Client) -> RunLease:
    return RunLease(
        client,
        uuid.UUID(RUN["id"]),
        0.01,
        lambda run: None,  # type: ignore[arg-type]
        infrastructure_id="process:h:7",
    )


def test_before_running_the_first_beat_only_opens_the_lease() -> None:
    client = Client()
    lease = lease_on(client)
    lease.open(before_running=True)
    assert client.opened == {"hold": 0.01, "infrastructure_id": None, "opening": True}
    assert lease.infrastructure_id == "process:h:7"  # for the RUNNING report to say


def test_where_it_runs_goes_with_the_next_beat_unless_the_report_kept_it() -> None:
    for kept in (False, True):
        client = Client()
        lease = lease_on(client)
        lease.open(before_running=True)
        if kept:
            lease.kept()
        lease.start()
        client.first_answer.put(RUN)
        try:
            next_beat = client.beats.get(timeout=10)
        finally:
            lease.stop()
        assert next_beat["infrastructure_id"] == (None if kept else "process:h:7"), kept


def test_without_a_running_report_next_the_first_beat_says_where_as_before() -> None:
    client = Client()
    lease_on(client).open()
    assert client.opened == {"hold": 0.01, "infrastructure_id": "process:h:7", "opening": False}
