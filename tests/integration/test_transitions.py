"""The one state writer, over every (from, to) pair, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from orchestrator import schemas, states
from orchestrator.errors import InvalidTransition, NotFound
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, flow_runs, transitions, work_pools
from orchestrator.states import FINAL_STATES, HELD, StateType, guards_of, is_allowed

PAIRS = list(itertools.product(StateType, StateType))


@pytest.fixture
def run_id(sessions: Any) -> uuid.UUID:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
        return run.id


def force_state(sessions: Any, run_id: uuid.UUID, state: StateType, worker_name: str | None = None) -> None:
    """Put a run in ``state`` directly (test setup only: bypasses the state machine)."""
    with sessions.begin() as session:
        session.execute(update(m.FlowRun).where(m.FlowRun.id == run_id).values(
            state_type=state, state_name=state.title(), start_time=None, end_time=None, run_count=0,
            worker_name=worker_name))


def meeting_guards(source: StateType, target: StateType) -> str | None:
    """The holder a run needs for the pair's own guards (``states.GUARDS``) to let it through."""
    return "w" if HELD in guards_of(source, target) else None


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_follows_the_table(sessions: Any, run_id: uuid.UUID, source: StateType, target: StateType) -> None:
    force_state(sessions, run_id, source, meeting_guards(source, target))
    with sessions.begin() as session:
        history_before = session.scalar(select(func.count()).select_from(m.FlowRunState))
    if is_allowed(source, target):
        with sessions.begin() as session:
            run = flow_runs.transition(session, run_id, target, message="why")
        assert run.state_type == target
        assert run.state_message == "why"
        assert (run.start_time is not None) == (target == StateType.RUNNING)
        assert (run.end_time is not None) == (target in FINAL_STATES)
        assert run.run_count == (1 if target == StateType.RUNNING else 0)
        expected_history = history_before + 1
    else:
        with sessions.begin() as session, pytest.raises(InvalidTransition, match=f"is {source}"):
            flow_runs.transition(session, run_id, target)
        expected_history = history_before
    with sessions() as session:
        assert session.scalar(select(m.FlowRun.state_type).where(m.FlowRun.id == run_id)) == (
            target if is_allowed(source, target) else source)
        assert session.scalar(select(func.count()).select_from(m.FlowRunState)) == expected_history


GUARDED = sorted(states.GUARDS)


@pytest.mark.parametrize(("source", "target"), GUARDED, ids=[f"{a}->{b}" for a, b in GUARDED])
def test_a_guarded_pair_refuses_a_run_its_guard_does_not_admit(sessions: Any, run_id: uuid.UUID, source: StateType,
                                                               target: StateType) -> None:
    """unheld: a run some worker holds cannot be claimed; held: a run nobody holds cannot be
    started or cancelled as if its process held it between retries."""
    force_state(sessions, run_id, source, None if meeting_guards(source, target) else "w")
    with sessions.begin() as session, pytest.raises(InvalidTransition, match="does not hold it"):
        flow_runs.transition(session, run_id, target)
    with sessions() as session:
        assert session.scalar(select(m.FlowRun.state_type).where(m.FlowRun.id == run_id)) == source


def test_named_guards_of_the_caller_hold_too(sessions: Any, run_id: uuid.UUID) -> None:
    """``holder``: a report from a worker that no longer holds the run; ``named``: Late only from
    a plain Scheduled."""
    force_state(sessions, run_id, StateType.RUNNING, "w1")
    with sessions.begin() as session, pytest.raises(InvalidTransition):
        flow_runs.transition(session, run_id, StateType.COMPLETED, guards=[transitions.holder("w2")])
    with sessions.begin() as session:
        flow_runs.transition(session, run_id, StateType.COMPLETED, guards=[transitions.holder("w1")])
    force_state(sessions, run_id, StateType.SCHEDULED)
    with sessions.begin() as session, pytest.raises(InvalidTransition):
        flow_runs.transition(session, run_id, StateType.SCHEDULED, name="Late", guards=[transitions.named("Late")])
    with sessions.begin() as session:
        run = flow_runs.transition(session, run_id, StateType.SCHEDULED, name="Late",
                                   guards=[transitions.named("Scheduled")])
        assert run.state_name == "Late"


def test_unknown_run_is_not_found(sessions: Any) -> None:
    with sessions.begin() as session, pytest.raises(NotFound):
        flow_runs.transition(session, uuid.uuid4(), StateType.PENDING)


def test_racing_writers_settle_in_the_database(sessions: Any, run_id: uuid.UUID, database_url: str) -> None:
    """Many threads claim one run through separate sessions: exactly one wins."""
    wins: list[int] = []
    losses: list[int] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        try:
            with sessions.begin() as session:
                flow_runs.claim(session, run_id, f"w{i}")
            wins.append(i)
        except InvalidTransition:
            losses.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    with sessions() as session:
        history = session.scalars(select(m.FlowRunState.type).where(m.FlowRunState.flow_run_id == run_id)).all()
    assert history == ["SCHEDULED", "PENDING"]


def test_start_time_is_kept_on_a_second_running(sessions: Any, run_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
        first = flow_runs.transition(session, run_id, StateType.RUNNING).start_time
        flow_runs.transition(session, run_id, StateType.PAUSED)
        again = flow_runs.transition(session, run_id, StateType.RUNNING)
    assert again.start_time == first
    assert again.run_count == 2
