"""Concurrency limits and priorities, through the real dispatcher and claim, on SQLite and
PostgreSQL with the in-memory broker twin."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from orchestrator import schemas
from orchestrator.errors import InvalidTransition, SlotUnavailable
from orchestrator.server.db import models as m
from orchestrator.server.dispatcher import Dispatcher
from orchestrator.server.reaper import Reaper
from orchestrator.server.services import claims, deployments, flow_runs, run_columns, transitions, work_pools
from orchestrator.states import StateType
from pools.broker import MemoryBroker
from pools.names import run_queue
from tests.harness import wait_until


class World:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self.broker = MemoryBroker()
        self.dispatcher = Dispatcher(sessions, self.broker, redispatch_seconds=30)
        self.now = dt.datetime.now(dt.UTC)

    def pool(self, name: str = "p", limit: int | None = None, queues: dict[str, tuple[int, int | None]] | None = None) -> None:
        with self.sessions.begin() as session:
            work_pools.create(session, schemas.WorkPoolCreate(name=name, type="process", concurrency_limit=limit))
            for queue, (priority, queue_limit) in (queues or {}).items():
                work_pools.create_queue(session, name, schemas.WorkQueueCreate(
                    name=queue, priority=priority, concurrency_limit=queue_limit))

    def deployment(self, name: str = "d", pool: str = "p", **fields: Any) -> uuid.UUID:
        with self.sessions.begin() as session:
            deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
                flow_name="f", name=name, entrypoint="f.py:f", work_pool_name=pool, **fields))
            return deployment.id

    def run(self, deployment_id: uuid.UUID, queue: str | None = None) -> uuid.UUID:
        self.now += dt.timedelta(milliseconds=1)  # distinct, increasing creation times
        with self.sessions.begin() as session:
            run, _ = flow_runs.create(session, deployment_id,
                                      schemas.FlowRunCreate(work_queue_name=queue), now=self.now)
            return run.id

    def published(self, pool: str = "p", queue: str = "default") -> list[uuid.UUID]:
        self.dispatcher.tick(self.now + dt.timedelta(seconds=1))
        return self.broker.drain(run_queue(pool, queue), timeout=0)

    def claim(self, run_id: uuid.UUID, worker: str = "w") -> None:
        with self.sessions.begin() as session:
            outcome = claims.claim(session, run_id, worker, now=self.now + dt.timedelta(seconds=1))
        if isinstance(outcome, claims.Refused):
            raise outcome.error

    def to(self, run_id: uuid.UUID, state: StateType) -> None:
        with self.sessions.begin() as session:
            transitions.transition(session, run_id, state)

    def state(self, run_id: uuid.UUID) -> tuple[str, str]:
        with self.sessions() as session:
            run = session.get(m.FlowRun, run_id)
            return run.state_type, run.state_name


@pytest.fixture
def world(sessions: Any) -> World:
    return World(sessions)


def test_pool_limit_publishes_only_what_fits(world: World) -> None:
    world.pool(limit=1)
    d = world.deployment()
    first, second = world.run(d), world.run(d)
    assert world.published() == [first]
    assert world.published() == []  # the slot is promised to the published run
    world.claim(first)
    world.to(first, StateType.RUNNING)
    assert world.published() == []
    world.to(first, StateType.COMPLETED)
    assert world.published() == [second]


@pytest.mark.parametrize("end", ["COMPLETED", "FAILED", "CANCELLED", "CRASHED", "reaped"])
def test_a_slot_is_freed_by_every_way_a_run_ends(world: World, end: str) -> None:
    world.pool(limit=1)
    d = world.deployment()
    first, second = world.run(d), world.run(d)
    assert world.published() == [first]
    world.claim(first)
    world.to(first, StateType.RUNNING)
    if end == "reaped":  # its worker and process went silent
        Reaper(world.sessions, heartbeat_seconds=1, interval_seconds=1, cancelling_timeout_seconds=1).tick(
            world.now + dt.timedelta(minutes=5))
        assert world.state(first)[0] == "CRASHED"
    else:
        world.to(first, StateType(end))
    assert world.published() == [second]


def test_a_run_awaiting_an_in_process_retry_keeps_its_slot_until_given_back(world: World) -> None:
    """AwaitingRetry (held by its process) occupies its slot and is not published; once the reaper
    gives it back as AwaitingRestart, it is an ordinary run waiting for any worker."""
    world.pool(limit=1)
    d = world.deployment()
    first, second = world.run(d), world.run(d)
    assert world.published() == [first]
    world.claim(first)
    with world.sessions.begin() as session:
        transitions.set_state(session, first, schemas.StateCreate(type=StateType.RUNNING, worker_name="w"))
        transitions.set_state(session, first, schemas.StateCreate(
            type=StateType.SCHEDULED, name="AwaitingRetry", worker_name="w",
            scheduled_time=world.now - dt.timedelta(seconds=1)))  # ahead of the second in the queue's order
    assert world.state(first) == ("SCHEDULED", "AwaitingRetry")
    assert world.published() == []  # neither the held run nor the one behind it
    Reaper(world.sessions, heartbeat_seconds=1, interval_seconds=1, cancelling_timeout_seconds=1).tick(
        world.now + dt.timedelta(minutes=5))
    assert world.state(first) == ("SCHEDULED", "AwaitingRestart")
    assert world.published() == [first]
    assert world.state(second) == ("SCHEDULED", "Scheduled")  # still behind it: one slot


def test_deployment_limit_enqueues_in_fifo_order(world: World) -> None:
    world.pool()
    d = world.deployment(concurrency_limit=1)
    runs = [world.run(d) for _ in range(3)]
    assert world.published() == [runs[0]]
    assert world.state(runs[1]) == ("SCHEDULED", "AwaitingConcurrencySlot")
    assert world.state(runs[2]) == ("SCHEDULED", "AwaitingConcurrencySlot")
    world.claim(runs[0])
    world.to(runs[0], StateType.RUNNING)
    world.to(runs[0], StateType.COMPLETED)
    assert world.published() == [runs[1]]


def test_cancel_new_cancels_runs_over_the_deployment_limit(world: World) -> None:
    world.pool()
    d = world.deployment(concurrency_limit=1, concurrency_collision_strategy="CANCEL_NEW")
    first, second = world.run(d), world.run(d)
    assert world.published() == [first]
    state, _ = world.state(second)
    assert state == "CANCELLED"


def test_queues_are_served_in_strict_priority_order(world: World) -> None:
    world.pool(limit=1, queues={"high": (1, None), "low": (5, None)})
    d = world.deployment()
    low = world.run(d, "low")
    high = world.run(d, "high")
    world.dispatcher.tick(world.now + dt.timedelta(seconds=1))
    assert world.broker.drain(run_queue("p", "high"), timeout=0) == [high]
    assert world.broker.drain(run_queue("p", "low"), timeout=0) == []
    assert low  # waits for the next free slot


def test_a_blocked_queue_or_deployment_never_delays_others(world: World) -> None:
    world.pool(queues={"busy": (1, 1), "other": (2, None)})
    d = world.deployment()
    limited = world.deployment(name="limited", concurrency_limit=1)
    busy = [world.run(d, "busy") for _ in range(2)]
    held = [world.run(limited, "other") for _ in range(2)]
    free = world.run(d, "other")
    world.dispatcher.tick(world.now + dt.timedelta(seconds=1))
    assert world.broker.drain(run_queue("p", "busy"), timeout=0) == [busy[0]]
    assert world.broker.drain(run_queue("p", "other"), timeout=0) == [held[0], free]


def test_claim_refuses_a_run_over_the_limit_and_replans_it(world: World) -> None:
    world.pool(limit=1)
    d = world.deployment()
    first, second = world.run(d), world.run(d)
    with world.sessions.begin() as session:  # both published (say, by two replicas' create routes)
        run_columns.mark_published(session, [first, second], world.now)
    world.claim(first)
    with pytest.raises(SlotUnavailable):
        world.claim(second)
    assert world.state(second)[0] == "SCHEDULED"
    with world.sessions() as session:  # the refusal un-published it, committed: the next pass plans it
        assert session.get(m.FlowRun, second).dispatched_at is None
        assert session.get(m.FlowRun, first).dispatched_at is not None


def test_two_claims_racing_for_the_last_slot(world: World) -> None:
    world.pool(limit=1)
    d = world.deployment()
    runs = [world.run(d) for _ in range(4)]
    won: list[uuid.UUID] = []
    lost: list[uuid.UUID] = []
    barrier = threading.Barrier(len(runs))

    def claim(run_id: uuid.UUID) -> None:
        barrier.wait()
        try:
            world.claim(run_id, f"w-{run_id}")
            won.append(run_id)
        except (SlotUnavailable, InvalidTransition):
            lost.append(run_id)

    threads = [threading.Thread(target=claim, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 3
    with world.sessions() as session:
        pending = session.scalars(select(m.FlowRun.id).where(m.FlowRun.state_type == "PENDING")).all()
    assert pending == won


def _waits_on_a_lock(world: World) -> bool:
    with world.sessions() as session:
        return bool(session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")))


def _waits_for_a_claim_in_flight(world: World, run_id: uuid.UUID, action: Any, what: str) -> None:
    """Claim ``run_id`` in a transaction left open, start ``action`` on a thread, and assert it
    waits on a lock until that claim commits (then let both finish)."""
    in_flight = world.sessions()
    in_flight.begin()
    assert isinstance(claims.claim(in_flight, run_id, "w", now=world.now + dt.timedelta(seconds=1)), claims.Claimed)
    other = threading.Thread(target=action)
    other.start()
    try:
        wait_until(f"{what} waiting for the claim in flight", lambda: _waits_on_a_lock(world) or not other.is_alive())
        assert other.is_alive(), f"{what} went through while a claim was in flight"
    finally:
        in_flight.commit()
        in_flight.close()
        other.join()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("where", ["pool", "queue", "deployment"])
def test_a_limit_set_during_a_claim_waits_for_it_and_counts_it(world: World, where: str) -> None:
    """A claim without limits takes no lock other claims wait for (``admission.check_slots``), but
    a limit set while it is in flight must wait for its commit: a claim that sees the new limit
    then counts the run it claimed. Were the limit committed first, the next claim would count
    without the in-flight one, and both would run under a limit of 1."""
    world.pool()
    d = world.deployment()
    first, second = world.run(d), world.run(d)

    def set_limit() -> None:
        with world.sessions.begin() as session:
            if where == "pool":
                work_pools.update(session, "p", schemas.WorkPoolUpdate(concurrency_limit=1))
            elif where == "queue":
                work_pools.update_queue(session, "p", "default", schemas.WorkQueueUpdate(concurrency_limit=1))
            else:
                deployments.update(session, d, schemas.DeploymentUpdate(concurrency_limit=1))

    _waits_for_a_claim_in_flight(world, first, set_limit, "the limit's change")
    with pytest.raises(SlotUnavailable):
        world.claim(second, "w2")
    assert world.state(first)[0] == "PENDING" and world.state(second)[0] == "SCHEDULED"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_claims_without_limits_do_not_wait_for_each_other(world: World) -> None:
    """Two claims of one pool without limits both go through while neither has committed (the
    pool's row is only shared-locked: a burst of claims does not queue on it)."""
    world.pool()
    d = world.deployment()
    runs = [world.run(d), world.run(d)]
    open_claims = []
    try:
        for i, run_id in enumerate(runs):
            session = world.sessions()
            session.begin()
            open_claims.append(session)
            outcome = claims.claim(session, run_id, f"w{i}", now=world.now + dt.timedelta(seconds=1))
            assert isinstance(outcome, claims.Claimed)
    finally:
        for session in open_claims:
            session.commit()
            session.close()
    assert [world.state(r)[0] for r in runs] == ["PENDING", "PENDING"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_claims_under_a_deployment_limit_in_two_pools_take_turns(world: World) -> None:
    """A deployment's runs can sit in two pools (its pool changed after a run was made): two claims
    under its limit of 1, one in each pool, are serialized all the same (the second waits for the
    first's commit, then counts its run), not only claims of one pool."""
    world.pool("p")
    world.pool("q")
    d = world.deployment(pool="p", concurrency_limit=1)
    first = world.run(d)
    with world.sessions.begin() as session:
        deployments.update(session, d, schemas.DeploymentUpdate(work_pool_name="q"))
    second = world.run(d)
    refused: list[BaseException] = []

    def claim_second() -> None:
        try:
            world.claim(second, "w2")
        except SlotUnavailable as error:
            refused.append(error)

    _waits_for_a_claim_in_flight(world, first, claim_second, "the second pool's claim under the deployment's limit")
    assert refused, "both runs of a deployment limited to 1 were claimed"
    assert world.state(first)[0] == "PENDING" and world.state(second)[0] == "SCHEDULED"
