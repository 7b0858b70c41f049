"""``GET /api/flow_runs/{id}/waiting_reason``: why a run has not started, cause by cause, on a live
API over SQLite and PostgreSQL (the ``api`` fixture runs the dispatcher, with no worker consuming)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.errors import NotFound
from orchestrator.states import StateType


def deployment(client: Any, pool: str = "local", **fields: Any) -> schemas.Deployment:
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process", **fields))
    return client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="add", name="sum", entrypoint="flows.py:add", work_pool_name=pool))


def run(client: Any, d: schemas.Deployment, **fields: Any) -> schemas.FlowRun:
    return client.create_flow_run(d.id, schemas.FlowRunCreate(**fields))


def codes(client: Any, run_id: uuid.UUID) -> list[str]:
    return [c.code for c in client.read_waiting_reason(run_id).causes]


def test_a_pool_without_worker_is_named(api: Any) -> None:
    client = api.client()
    r = run(client, deployment(client))
    why = client.read_waiting_reason(r.id)
    assert why.state.type == StateType.SCHEDULED
    assert [c.code for c in why.causes] == ["NO_WORKER"]
    assert why.reason == "pool 'local' has no online worker (start one: orch worker start --pool local)"


def test_an_online_worker_removes_that_cause(api: Any) -> None:
    client = api.client()
    r = run(client, deployment(client))
    client.heartbeat("local", "w1")
    assert codes(client, r.id)[0] in ("DISPATCHING", "NOT_CLAIMED")
    assert "NO_WORKER" not in codes(client, r.id)


def test_a_paused_pool_and_a_paused_queue(api: Any) -> None:
    client = api.client()
    d = deployment(client)
    client.create_work_queue("local", schemas.WorkQueueCreate(name="q"))
    client.update_work_queue("local", "q", schemas.WorkQueueUpdate(paused=True))
    client.heartbeat("local", "w1")
    in_q = run(client, d, work_queue_name="q")
    why = client.read_waiting_reason(in_q.id)
    assert [c.code for c in why.causes] == ["QUEUE_PAUSED"]
    assert why.reason == "queue 'q' of pool 'local' is paused (orch work-queue resume q --pool local)"
    client.update_work_pool("local", schemas.WorkPoolUpdate(paused=True))
    assert codes(client, in_q.id) == ["POOL_PAUSED", "QUEUE_PAUSED"]
    assert codes(client, run(client, d).id) == ["POOL_PAUSED"]


def test_a_paused_deployment_is_not_a_cause(api: Any) -> None:
    """Pausing a deployment stops its schedules, not its manual runs: saying otherwise would send
    the user looking in the wrong place."""
    client = api.client()
    d = deployment(client)
    client.set_deployment_paused(d.id, True)
    why = client.read_waiting_reason(run(client, d).id)
    assert [c.code for c in why.causes] == ["NO_WORKER"]
    assert "paused" not in (why.reason or "")


def test_a_full_concurrency_limit_names_the_limit_and_its_use(api: Any) -> None:
    client = api.client()
    d = deployment(client, concurrency_limit=1)
    client.heartbeat("local", "w1")
    first = run(client, d)
    client.claim_flow_run(first.id, "w1", "local")
    assert codes(client, first.id) == ["STARTING"]
    assert client.read_waiting_reason(first.id).reason == "claimed by worker 'w1'; its infrastructure is starting"
    second = run(client, d)
    why = client.read_waiting_reason(second.id)
    assert [c.code for c in why.causes] == ["CONCURRENCY_LIMIT"]
    assert why.reason == "waiting for a concurrency slot (pool limit 1, 1 active)"
    client.set_flow_run_state(first.id, StateType.RUNNING)
    assert client.read_waiting_reason(first.id).reason is None  # started: nothing to wait for
    client.set_flow_run_state(first.id, StateType.COMPLETED)
    assert "CONCURRENCY_LIMIT" not in codes(client, second.id)


def test_a_late_run_says_how_late(api: Any) -> None:
    client = api.client()
    r = run(client, deployment(client), scheduled_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=40))
    why = client.read_waiting_reason(r.id)
    assert why.late_seconds is not None and 40 <= why.late_seconds < 60
    assert re.fullmatch(r"late by (4\d|5\d) s: pool 'local' has no online worker \(.*\)", why.reason or ""), why.reason


def test_a_run_scheduled_later_says_when(api: Any) -> None:
    client = api.client()
    r = run(client, deployment(client), scheduled_time=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3, seconds=5))
    why = client.read_waiting_reason(r.id)
    assert [c.code for c in why.causes] == ["SCHEDULED_LATER", "NO_WORKER"]
    assert re.match(r"scheduled for \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 3 min\); pool 'local' has no", why.reason or "")


def test_an_unknown_run_is_a_404(api: Any) -> None:
    with pytest.raises(NotFound):
        api.client().read_waiting_reason(uuid.uuid4())


def test_runs_are_listed_by_name_and_by_state_name(api: Any) -> None:
    client = api.client()
    d = deployment(client)
    cancelled, waiting = run(client, d), run(client, d)
    client.cancel_flow_run(cancelled.id)

    def ids(**filters: Any) -> set[uuid.UUID]:
        return {r.id for r in client.list_flow_runs(**filters).items}

    assert ids(state_name=["Cancelled"]) == {cancelled.id}
    assert ids(state_name=["Cancelled"], state=["SCHEDULED"]) == {cancelled.id, waiting.id}  # they add up
    assert ids(state_name=["Late"]) == set()
    assert ids(name=waiting.name) == {waiting.id}
    assert ids(name="no-such-name") == set()
