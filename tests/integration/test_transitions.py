"""The one state writer, over every (from, to) pair, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from orchestrator import schemas, states
from orchestrator.errors import InvalidTransition, NotFound
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, flow_runs, run_columns, transitions, work_pools
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


def force_state(sessions: Any, run_id: uuid.UUID, state: StateType, worker_name: str | None = None,
                name: str | None = None) -> None:
    """Put a run in ``state`` directly (test setup only: bypasses the state machine)."""
    with sessions.begin() as session:
        session.execute(update(m.FlowRun).where(m.FlowRun.id == run_id).values(
            state_type=state, state_name=name or state.title(), start_time=None, end_time=None, run_count=0,
            worker_name=worker_name))


def force_meeting(sessions: Any, run_id: uuid.UUID, source: StateType, target: StateType, *, meet: bool = True) -> None:
    """Put a run in ``source`` as the pair's own guards (``states.GUARDS``) want it -- held by its
    process (AwaitingRetry, worker w) or not -- or, with ``meet=False``, as they refuse it."""
    held = HELD in guards_of(source, target)
    if not meet:
        held = not held
    force_state(sessions, run_id, source, "w" if held else None, states.AWAITING_RETRY if held else None)


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_follows_the_table(sessions: Any, run_id: uuid.UUID, source: StateType, target: StateType) -> None:
    force_meeting(sessions, run_id, source, target)
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
    """unheld: a run its process holds between retries (AwaitingRetry) cannot be claimed nor
    cancelled at once; held: a run nobody holds cannot be started or stopped as if it were held."""
    force_meeting(sessions, run_id, source, target, meet=False)
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


def test_the_held_state_is_read_by_its_name_not_by_worker_name(sessions: Any, run_id: uuid.UUID) -> None:
    """AwaitingRetry is the held state: a plain Scheduled run that carries a worker_name is still
    claimable, and an AwaitingRetry run is not, whatever the column says."""
    force_state(sessions, run_id, StateType.SCHEDULED, "stray")
    with sessions.begin() as session:
        assert flow_runs.claim(session, run_id, "w").state_type == StateType.PENDING
    force_state(sessions, run_id, StateType.SCHEDULED, "w", states.AWAITING_RETRY)
    with sessions.begin() as session, pytest.raises(InvalidTransition, match="does not hold it"):
        flow_runs.claim(session, run_id, "other")


def test_entering_the_held_state_needs_a_running_run_or_the_held_state_itself(sessions: Any,
                                                                              run_id: uuid.UUID) -> None:
    """The process's retry report: from RUNNING (and again from AwaitingRetry, a repeated report);
    never from a run waiting for any worker; and a released run is never named AwaitingRetry."""
    force_state(sessions, run_id, StateType.SCHEDULED)
    with sessions.begin() as session, pytest.raises(InvalidTransition):
        transitions.await_retry(session, run_id, when=transitions.utcnow(), message="no")
    force_state(sessions, run_id, StateType.RUNNING, "w")
    for _ in range(2):
        with sessions.begin() as session:
            run = transitions.await_retry(session, run_id, when=transitions.utcnow(), message="retry",
                                          guards=[transitions.holder("w")])
        assert (run.state_type, run.state_name, run.worker_name) == ("SCHEDULED", states.AWAITING_RETRY, "w")
    with sessions.begin() as session, pytest.raises(ValueError, match="held"):
        transitions.reschedule(session, run_id, name=states.AWAITING_RETRY, message="released")


def test_a_reported_scheduled_state_is_only_the_retry(sessions: Any, run_id: uuid.UUID) -> None:
    """The wire stays as it was (SCHEDULED named AwaitingRetry, or unnamed); another name is a 422."""
    from orchestrator.errors import InvalidInput

    force_state(sessions, run_id, StateType.RUNNING, "w")
    with sessions.begin() as session, pytest.raises(InvalidInput, match="AwaitingRetry"):
        flow_runs.set_state(session, run_id, schemas.StateCreate(type=StateType.SCHEDULED, name="Later",
                                                                 worker_name="w"))
    with sessions.begin() as session:
        run = flow_runs.set_state(session, run_id, schemas.StateCreate(type=StateType.SCHEDULED, worker_name="w"))
    assert run.state_name == states.AWAITING_RETRY


def _heartbeat_at(sessions: Any, run_id: uuid.UUID) -> Any:
    with sessions() as session:
        return session.scalar(select(m.FlowRun.heartbeat_at).where(m.FlowRun.id == run_id))


@pytest.mark.parametrize("state", list(StateType), ids=lambda s: s.value)
def test_a_process_heartbeat_is_written_unless_the_run_is_pending(sessions: Any, run_id: uuid.UUID,
                                                                  state: StateType) -> None:
    """A flow-run process's first beat goes out as it starts, while its run is PENDING: nothing
    reads that heartbeat (the RUNNING report sets it), so it is not written."""
    force_state(sessions, run_id, state)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with sessions.begin() as session:
        run_columns.heartbeat(session, run_id, now=at)
    assert (_heartbeat_at(sessions, run_id) == at) == (state != StateType.PENDING)


@pytest.mark.parametrize("state", list(StateType), ids=lambda s: s.value)
def test_a_dropped_heartbeat_backdates_only_a_run_not_final(sessions: Any, run_id: uuid.UUID, state: StateType) -> None:
    """A process holds its heartbeat until it exits, after its final report: that drop is every
    run's normal end and must not write the run again."""
    force_state(sessions, run_id, state)
    recent, lapsed = dt.datetime(2030, 1, 2, tzinfo=dt.UTC), dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with sessions.begin() as session:
        session.execute(update(m.FlowRun).where(m.FlowRun.id == run_id).values(heartbeat_at=recent))
        run_columns.lapse_heartbeat(session, run_id, lapsed)
    assert _heartbeat_at(sessions, run_id) == (recent if state in FINAL_STATES else lapsed)
