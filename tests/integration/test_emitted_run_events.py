"""Every state change of a flow run writes exactly one ``orchestrator.flow-run.<state name>`` event in
its own transaction, and none when the change is refused; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import schemas
from orchestrator.errors import InvalidTransition
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, emitted, flow_runs, transitions, work_pools
from orchestrator.server.services.new_runs import insert_runs, run_values
from orchestrator.states import StateType


@pytest.fixture
def deployment(sessions: Any) -> m.Deployment:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        created, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p", tags=["etl"]))
        session.expunge(created)
        return created


def run_events(session: Any, run_id: uuid.UUID) -> list[m.Event]:
    return list(session.scalars(select(m.Event).where(m.Event.resource_id == f"orchestrator.flow-run.{run_id}")
                                .order_by(m.Event.seq)))


def states_of(session: Any, run_id: uuid.UUID) -> list[tuple[str, str]]:
    return [tuple(r) for r in session.execute(select(m.FlowRunState.type, m.FlowRunState.name)
                                              .where(m.FlowRunState.flow_run_id == run_id)
                                              .order_by(m.FlowRunState.id))]


def test_one_event_per_state_change_linked_to_the_previous(sessions: Any, deployment: m.Deployment) -> None:
    with sessions.begin() as session:
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate(tags=["mine"]))
    with sessions.begin() as session:
        transitions.claim(session, run.id, "w1")
    with sessions.begin() as session:
        flow_runs.set_state(session, run.id, schemas.StateCreate(type=StateType.RUNNING, worker_name="w1"))
    with sessions.begin() as session:
        flow_runs.set_state(session, run.id, schemas.StateCreate(type=StateType.COMPLETED, message="done"))
    with sessions() as session:
        found = run_events(session, run.id)
        pool = work_pools.get(session, "p")
        queue = work_pools.get_queue(session, "p", "default")
        history = states_of(session, run.id)
    assert [e.event for e in found] == ["orchestrator.flow-run.Scheduled", "orchestrator.flow-run.Pending",
                                        "orchestrator.flow-run.Running", "orchestrator.flow-run.Completed"]
    assert [(e.payload["validated_state"]["type"], e.payload["validated_state"]["name"]) for e in found] == history
    assert [e.follows for e in found] == [None, *(e.id for e in found[:-1])]
    assert [e.payload["intended"] for e in found] == [
        {"from": None, "to": "SCHEDULED"}, {"from": "SCHEDULED", "to": "PENDING"},
        {"from": "PENDING", "to": "RUNNING"}, {"from": "RUNNING", "to": "COMPLETED"}]
    last = found[-1]
    assert last.payload["initial_state"] == {"type": "RUNNING", "name": "Running"}
    assert last.payload["validated_state"] == {"type": "COMPLETED", "name": "Completed", "message": "done"}
    assert last.resource["orchestrator.resource.name"] == run.name
    assert last.resource["orchestrator.state-type"] == "COMPLETED"
    roles = {(r["orchestrator.resource.role"], r["orchestrator.resource.id"]) for r in last.related}
    assert roles == {("flow", f"orchestrator.flow.{deployment.flow_id}"),
                     ("deployment", f"orchestrator.deployment.{deployment.id}"),
                     ("work-queue", f"orchestrator.work-queue.{queue.id}"),
                     ("work-pool", f"orchestrator.work-pool.{pool.id}"),
                     ("worker", "orchestrator.worker.p.w1"),
                     ("tag", "orchestrator.tag.etl"), ("tag", "orchestrator.tag.mine")}
    assert "worker" not in {r["orchestrator.resource.role"] for r in found[0].related}


def test_a_refused_or_rolled_back_change_writes_no_event(sessions: Any, deployment: m.Deployment) -> None:
    with sessions.begin() as session:
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
    with sessions.begin() as session, pytest.raises(InvalidTransition):
        transitions.transition(session, run.id, StateType.COMPLETED)  # SCHEDULED -> COMPLETED: not allowed
    with pytest.raises(RuntimeError), sessions.begin() as session:
        transitions.claim(session, run.id, "w1")
        raise RuntimeError("the claim's transaction fails")
    with sessions() as session:
        assert [e.event for e in run_events(session, run.id)] == ["orchestrator.flow-run.Scheduled"]


def test_crash_cancel_and_reschedule_each_write_one_event(sessions: Any, deployment: m.Deployment) -> None:
    with sessions.begin() as session:
        crashed, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
        cancelled, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
    with sessions.begin() as session:
        transitions.claim(session, crashed.id, "w1")
        transitions.reschedule(session, crashed.id, name="Scheduled", message="worker gone")
        transitions.claim(session, crashed.id, "w2")
        transitions.crash(session, crashed.id, "lost")
        transitions.cancel(session, cancelled.id)
    with sessions() as session:
        assert [e.event.rsplit(".", 1)[1] for e in run_events(session, crashed.id)] == [
            "Scheduled", "Pending", "Scheduled", "Pending", "Crashed"]
        assert [e.event.rsplit(".", 1)[1] for e in run_events(session, cancelled.id)] == ["Scheduled", "Cancelled"]
        for run_id in (crashed.id, cancelled.id):
            assert len(run_events(session, run_id)) == len(states_of(session, run_id))


def test_bulk_creation_writes_one_event_per_run_that_landed(sessions: Any, deployment: m.Deployment) -> None:
    now = dt.datetime.now(dt.UTC)

    def row(key: str) -> dict[str, Any]:
        return run_values(flow_id=deployment.flow_id, deployment_id=deployment.id, deployment_version=None,
                          work_pool_name="p", work_queue_name="default", parameters={}, job_variables={}, tags=[],
                          idempotency_key=key, expected_start_time=now, now=now)

    first = [row(f"k{i}") for i in range(700)]  # more than one chunk
    with sessions.begin() as session:
        insert_runs(session, first)
    again = [row("k1"), row("new")]  # k1 exists: skipped, no second event
    with sessions.begin() as session:
        landed = insert_runs(session, again)
    assert landed == [again[1]["id"]]
    with sessions() as session:
        names = session.scalars(select(m.Event.resource_id).where(m.Event.event == "orchestrator.flow-run.Scheduled"))
        assert sorted(names) == sorted(f"orchestrator.flow-run.{r['id']}" for r in [*first, again[1]])


def test_each_transitions_event_is_named_by_its_state_row_and_the_state_it_left_is_carried(
        sessions: Any, deployment: m.Deployment) -> None:
    """The event id is derived from the transition's own history row (read with the rows before it
    in the insert's statement on PostgreSQL), and ``left_state`` gives the state the transition
    left and since when, as the history has it: what the RUNNING report's latency uses."""
    with sessions.begin() as session:
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
    with sessions.begin() as session:
        assert transitions.left_state(session, run.id) is None  # no transition in this session
        transitions.claim(session, run.id, "w1")
        assert transitions.left_state(session, run.id)[0] == StateType.SCHEDULED
    with sessions.begin() as session:
        flow_runs.set_state(session, run.id, schemas.StateCreate(type=StateType.RUNNING, worker_name="w1"))
        left = transitions.left_state(session, run.id)
    with sessions() as session:
        rows = session.execute(select(m.FlowRunState.id, m.FlowRunState.type, m.FlowRunState.timestamp)
                               .where(m.FlowRunState.flow_run_id == run.id).order_by(m.FlowRunState.id)).all()
        found = run_events(session, run.id)
    assert [r.type for r in rows] == ["SCHEDULED", "PENDING", "RUNNING"]
    assert left == (StateType.PENDING, rows[1].timestamp)
    assert [e.id for e in found] == [emitted.derived_id(run.id, "created"),
                                     *(emitted.derived_id(run.id, r.id) for r in rows[1:])]
