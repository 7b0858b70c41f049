"""The reaper recovers runs whose holders went silent, on SQLite and PostgreSQL. Time is passed
in explicitly (``now``), so each rule is tested at its boundary without waiting."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.reaper import Reaper
from orchestrator.server.services import deployments, flow_runs, transitions, work_pools
from orchestrator.states import StateType

HEARTBEAT = 10.0  # seconds; silence = 3 heartbeats
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def world(sessions: Any) -> dict[str, Any]:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
    reaper = Reaper(sessions, heartbeat_seconds=HEARTBEAT, interval_seconds=1, cancelling_timeout_seconds=60)
    return {"sessions": sessions, "deployment_id": deployment.id, "reaper": reaper}


def new_run(world: dict[str, Any], *, state: StateType, worker: str | None = "w1",
            heartbeat_at: dt.datetime | None = None, state_at: dt.datetime = T0, name: str | None = None) -> uuid.UUID:
    sessions = world["sessions"]
    with sessions.begin() as session:
        deployment = session.get(m.Deployment, world["deployment_id"])
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate(scheduled_time=T0), now=T0)
        session.execute(update(m.FlowRun).where(m.FlowRun.id == run.id).values(
            state_type=state, state_name=name or state.title(), worker_name=worker, heartbeat_at=heartbeat_at,
            state_timestamp=state_at))
        return run.id


def worker_beat(world: dict[str, Any], name: str, at: dt.datetime) -> None:
    with world["sessions"].begin() as session:
        work_pools.heartbeat(session, "p", name)
        session.execute(update(m.Worker).where(m.Worker.name == name).values(last_heartbeat=at))


def read(world: dict[str, Any], run_id: uuid.UUID) -> m.FlowRun:
    with world["sessions"]() as session:
        return session.get(m.FlowRun, run_id)  # type: ignore[return-value]


def test_claimed_run_of_a_silent_worker_is_rescheduled(world: dict[str, Any]) -> None:
    worker_beat(world, "w1", T0)
    run_id = new_run(world, state=StateType.PENDING)
    assert world["reaper"].tick(T0 + dt.timedelta(seconds=29)) == []  # within 3 heartbeats: alive
    changed = world["reaper"].tick(T0 + dt.timedelta(seconds=31))
    assert [r.id for r in changed] == [run_id]
    run = read(world, run_id)
    assert (run.state_type, run.worker_name, run.dispatched_at) == ("SCHEDULED", None, None)
    assert "worker w1 went silent" in (run.state_message or "")


def test_running_run_crashes_only_when_worker_and_process_are_both_silent(world: dict[str, Any]) -> None:
    worker_beat(world, "w1", T0)
    run_id = new_run(world, state=StateType.RUNNING, heartbeat_at=T0 + dt.timedelta(seconds=25))
    later = T0 + dt.timedelta(seconds=40)
    assert world["reaper"].tick(later) == []  # the process still reports: the worker may be restarting
    changed = world["reaper"].tick(T0 + dt.timedelta(seconds=56))
    assert [r.id for r in changed] == [run_id]
    run = read(world, run_id)
    assert run.state_type == "CRASHED" and run.end_time is not None
    assert "worker w1 and the flow-run process stopped reporting" in (run.state_message or "")


def test_running_run_of_a_live_worker_is_left_alone(world: dict[str, Any]) -> None:
    run_id = new_run(world, state=StateType.RUNNING, heartbeat_at=None)
    worker_beat(world, "w1", T0 + dt.timedelta(seconds=100))
    assert world["reaper"].tick(T0 + dt.timedelta(seconds=101)) == []
    assert read(world, run_id).state_type == "RUNNING"


def test_crash_restarts_reschedule_then_give_up(world: dict[str, Any]) -> None:
    with world["sessions"].begin() as session:
        deployments.update(session, world["deployment_id"], schemas.DeploymentUpdate(crash_retries=1))
    run_id = new_run(world, state=StateType.RUNNING, worker=None)
    world["reaper"].tick(T0 + dt.timedelta(seconds=31))
    run = read(world, run_id)
    assert (run.state_type, run.state_name, run.crash_restarts) == ("SCHEDULED", "AwaitingRestart", 1)
    assert "automatic restart 1 of 1" in (run.state_message or "")
    with world["sessions"].begin() as session:
        transitions.claim(session, run_id, "w2", now=T0 + dt.timedelta(seconds=32))
        transitions.transition(session, run_id, StateType.RUNNING, now=T0 + dt.timedelta(seconds=33))
    world["reaper"].tick(T0 + dt.timedelta(seconds=100))
    assert read(world, run_id).state_type == "CRASHED"


def test_run_held_between_retries_is_freed_when_silent(world: dict[str, Any]) -> None:
    """AwaitingRetry (held) whose holders are silent -> AwaitingRestart, for any worker; a plain
    Scheduled run with a stray worker_name is not "held" (the name decides, not the column)."""
    run_id = new_run(world, state=StateType.SCHEDULED, heartbeat_at=T0, name="AwaitingRetry")
    plain = new_run(world, state=StateType.SCHEDULED, heartbeat_at=T0)
    changed = world["reaper"].tick(T0 + dt.timedelta(seconds=31))
    assert [r.id for r in changed] == [run_id]
    run = read(world, run_id)
    assert (run.state_type, run.state_name, run.worker_name) == ("SCHEDULED", "AwaitingRestart", None)
    assert "went silent between retries" in (run.state_message or "")
    with world["sessions"].begin() as session:  # free for any worker now
        assert transitions.claim(session, run_id, "w2", now=T0 + dt.timedelta(seconds=32)).state_type == "PENDING"
    assert read(world, plain).state_name == "Scheduled"


def test_cancelling_run_is_cancelled_when_its_worker_is_gone_or_slow(world: dict[str, Any]) -> None:
    worker_beat(world, "alive", T0 + dt.timedelta(seconds=30))
    gone = new_run(world, state=StateType.CANCELLING, worker="w1")
    slow = new_run(world, state=StateType.CANCELLING, worker="alive")
    world["reaper"].tick(T0 + dt.timedelta(seconds=31))
    assert read(world, gone).state_type == "CANCELLED"
    assert read(world, slow).state_type == "CANCELLING"
    worker_beat(world, "alive", T0 + dt.timedelta(seconds=61))
    world["reaper"].tick(T0 + dt.timedelta(seconds=61))
    assert read(world, slow).state_type == "CANCELLED"
    assert "did not confirm" in (read(world, slow).state_message or "")


def test_reapers_racing_recover_each_run_once(world: dict[str, Any]) -> None:
    run_ids = [new_run(world, state=StateType.PENDING, worker="gone") for _ in range(10)]
    second = Reaper(world["sessions"], heartbeat_seconds=HEARTBEAT, interval_seconds=1, cancelling_timeout_seconds=60)
    results: list[int] = []
    barrier = threading.Barrier(2)

    def reap(reaper: Reaper) -> None:
        barrier.wait()
        results.append(len(reaper.tick(T0 + dt.timedelta(seconds=60))))

    threads = [threading.Thread(target=reap, args=(r,)) for r in (world["reaper"], second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 10
    with world["sessions"]() as session:
        for run_id in run_ids:
            states = session.scalars(select(m.FlowRunState.type).where(m.FlowRunState.flow_run_id == run_id)).all()
            assert states == ["SCHEDULED", "SCHEDULED"]  # created, then rescheduled exactly once


def test_reports_of_a_replaced_holder_are_refused(world: dict[str, Any]) -> None:
    """After a run was recovered and claimed by another worker, the old process's reports no longer apply."""
    run_id = new_run(world, state=StateType.PENDING, worker="old")
    world["reaper"].tick(T0 + dt.timedelta(seconds=31))
    from orchestrator.errors import InvalidTransition

    with world["sessions"].begin() as session:
        transitions.claim(session, run_id, "new", now=T0 + dt.timedelta(seconds=32))
    with world["sessions"].begin() as session, pytest.raises(InvalidTransition, match="does not hold"):
        transitions.set_state(session, run_id, schemas.StateCreate(type=StateType.RUNNING, worker_name="old"))
    with world["sessions"].begin() as session:
        run = transitions.set_state(session, run_id, schemas.StateCreate(type=StateType.RUNNING, worker_name="new"))
    assert run.state_type == "RUNNING"


def test_a_namesake_worker_in_another_pool_holds_no_lease(world: dict[str, Any]) -> None:
    with world["sessions"].begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="other", type="process"))
        work_pools.heartbeat(session, "other", "w1")
        session.execute(update(m.Worker).values(last_heartbeat=T0 + dt.timedelta(seconds=30)))
    run_id = new_run(world, state=StateType.PENDING, worker="w1")
    world["reaper"].tick(T0 + dt.timedelta(seconds=31))
    assert read(world, run_id).state_type == "SCHEDULED"
