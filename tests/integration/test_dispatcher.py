"""The dispatcher publishes due runs, on SQLite and PostgreSQL, with the in-memory broker twin (and, for
what Redis refuses, with Redis)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.dispatcher import REFUSED_REPLAN_SECONDS, Dispatcher
from orchestrator.server.hub import DISPATCH, DUE, REFUSED
from orchestrator.server.hub.local import LocalHub
from orchestrator.server.services import deployments, flow_runs, work_pools
from pools.broker import MemoryBroker
from pools.names import run_queue

QUEUE = run_queue("p", "default")


@pytest.fixture
def setup(sessions: Any) -> tuple[Any, MemoryBroker, Dispatcher, Any]:
    broker = MemoryBroker()
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
    return sessions, broker, Dispatcher(sessions, broker, redispatch_seconds=30), deployment


def create_run(sessions: Any, deployment: Any, when: dt.datetime) -> Any:
    with sessions.begin() as session:
        run, _ = flow_runs.create(session, deployment.id,
                                  schemas.FlowRunCreate(scheduled_time=when))
        return run


def test_due_runs_are_published_once_and_future_ones_when_due(setup: Any) -> None:
    sessions, broker, dispatcher, deployment = setup
    now = dt.datetime.now(dt.UTC)
    due = create_run(sessions, deployment, now - dt.timedelta(seconds=1))
    later = create_run(sessions, deployment, now + dt.timedelta(seconds=1.5))
    wait = dispatcher.tick(now)
    assert broker.drain(QUEUE, timeout=0) == [due.id]
    assert wait == pytest.approx(1.5)  # it sleeps exactly until the next run is due
    dispatcher.tick(now)
    assert broker.drain(QUEUE, timeout=0) == []  # not published twice
    dispatcher.tick(now + dt.timedelta(seconds=2))
    assert broker.drain(QUEUE, timeout=0) == [later.id]


def test_unclaimed_runs_are_published_again(setup: Any) -> None:
    sessions, broker, dispatcher, deployment = setup
    now = dt.datetime.now(dt.UTC)
    run = create_run(sessions, deployment, now)
    dispatcher.tick(now)
    assert broker.drain(QUEUE, timeout=0) == [run.id]
    # The message is lost (Redis flushed, say) and nobody claims the run.
    dispatcher.tick(now + dt.timedelta(seconds=10))
    assert broker.drain(QUEUE, timeout=0) == []
    dispatcher.tick(now + dt.timedelta(seconds=31))
    assert broker.drain(QUEUE, timeout=0) == [run.id]
    # Once claimed it is never published again.
    with sessions.begin() as session:
        flow_runs.claim(session, run.id, "w", now=now + dt.timedelta(seconds=32))
    dispatcher.tick(now + dt.timedelta(seconds=100))
    assert broker.drain(QUEUE, timeout=0) == []


def test_a_run_whose_message_still_waits_is_not_published_again(setup: Any) -> None:
    """Issue 20: workers behind by more than the redispatch period must not get a copy of every
    waiting run each period (the queue would grow without end, and a new run wait behind the copies)."""
    sessions, broker, dispatcher, deployment = setup
    now = dt.datetime.now(dt.UTC)
    runs = {create_run(sessions, deployment, now).id for _ in range(3)}
    dispatcher.tick(now)
    assert broker.depth(QUEUE) == 3
    for later in (31, 62, 93):  # nobody consumes: the messages are still there
        dispatcher.tick(now + dt.timedelta(seconds=later))
        assert broker.depth(QUEUE) == 3
    # A worker took two messages and died before claiming: two runs have no message any more.
    kept = broker.drain(QUEUE, timeout=0)[2]
    broker.publish(QUEUE, kept)
    dispatcher.tick(now + dt.timedelta(seconds=124))
    assert broker.depth(QUEUE) == 3  # one message per unclaimed run again
    dispatcher.tick(now + dt.timedelta(seconds=155))
    assert set(broker.drain(QUEUE, timeout=0)) <= runs and broker.depth(QUEUE) == 0


def test_paused_pool_holds_runs_until_resumed(setup: Any) -> None:
    sessions, broker, dispatcher, deployment = setup
    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as session:
        work_pools.update(session, "p", schemas.WorkPoolUpdate(paused=True))
    run = create_run(sessions, deployment, now)
    dispatcher.tick(now)
    assert broker.drain(QUEUE, timeout=0) == []
    with sessions.begin() as session:
        work_pools.update(session, "p", schemas.WorkPoolUpdate(paused=False))
    dispatcher.tick(now)
    assert broker.drain(QUEUE, timeout=0) == [run.id]


def test_a_failed_publish_is_retried(setup: Any) -> None:
    sessions, broker, dispatcher, deployment = setup
    now = dt.datetime.now(dt.UTC)
    run = create_run(sessions, deployment, now)
    broker.available = False
    assert dispatcher.tick(now) == 1.0
    with sessions() as session:
        assert session.scalar(select(m.FlowRun.dispatched_at).where(m.FlowRun.id == run.id)) is None
    broker.available = True
    dispatcher.tick(now)
    assert broker.drain(QUEUE, timeout=0) == [run.id]


# --- woken by the event hub ---------------------------------------------------------------------


@pytest.mark.parametrize(("key", "at_least"), [(DUE, 0.0), (REFUSED, REFUSED_REPLAN_SECONDS)])
def test_the_running_dispatcher_is_woken_by_the_hub(setup: Any, key: str, at_least: float) -> None:
    """It would idle 300 s: a run it has not been told of waits; DUE makes a pass at once, REFUSED
    (a claim refused, the run un-published) one after ``REFUSED_REPLAN_SECONDS``."""
    sessions, broker, _, deployment = setup
    hub = LocalHub()
    dispatcher = Dispatcher(sessions, broker, redispatch_seconds=30, hub=hub, idle_seconds=300)
    dispatcher.start()
    try:
        deadline = time.monotonic() + 10
        while dispatcher.passes < 1:  # its first pass is done; it now sleeps 300 s
            assert time.monotonic() < deadline
            time.sleep(0.01)
        run = create_run(sessions, deployment, dt.datetime.now(dt.UTC))
        assert broker.drain(QUEUE, timeout=0.3) == []  # nobody said anything
        told = time.monotonic()
        hub.publish((DISPATCH, key))
        assert broker.drain(QUEUE, timeout=5) == [run.id]
        assert time.monotonic() - told >= at_least
    finally:
        dispatcher.stop()


def test_a_created_run_whose_sent_message_redis_refused_is_published_again(sessions: Any, redis_url: str) -> None:
    """On Redis the API's publish does not wait for Redis's reply (``RunBroker.send``): a message
    Redis refused is found at the next publish or the dispatcher's next pass, whose run is then
    un-marked, planned in that pass, and published once Redis takes it."""
    import redis

    from pools.broker import CeleryBroker

    broker = CeleryBroker(redis_url)
    dispatcher = Dispatcher(sessions, broker, redispatch_seconds=30)
    client = redis.Redis.from_url(redis_url)
    client.set(QUEUE, "not a list")  # Redis refuses an LPUSH onto it
    try:
        with sessions.begin() as session:
            work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
            deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
                flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        with sessions.begin() as session:
            run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate(), publish=True)
        dispatcher.publish_created([run])  # sent: Redis's refusal not read yet

        def marked() -> bool:
            with sessions() as session:
                return session.scalar(select(m.FlowRun.dispatched_at).where(m.FlowRun.id == run.id)) is not None

        assert marked()
        now = dt.datetime.now(dt.UTC)
        assert dispatcher.tick(now) == 1.0  # the refusal found; published again, refused again
        assert not marked()
        client.delete(QUEUE)
        dispatcher.tick(now)
        assert marked() and broker.depth(QUEUE) == 1
        assert broker.lost() == []
    finally:
        broker.close()
        client.close()
