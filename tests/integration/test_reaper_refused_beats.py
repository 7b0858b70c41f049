"""The reaper while an API refuses heartbeats and the reaper's own database access works, on
PostgreSQL, through the real HTTP API and clients: the heartbeat's write fails in the database
(SQLSTATE 53300, "too many connections", as when the API's connections are refused or its pool is
spent), the API answers 503 and the holders retry, as they do. Before, the reaper saw only the
silence and crashed the live run: it distrusted silence only after its own failed passes, and it
had none (its statements were not the ones refused, or it ran in another replica, or the outage
fell between two of its passes). Now any heartbeat answered with a server error, on any replica,
keeps silence untrusted until every live holder could beat again."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.errors import OrchestratorError
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub.postgres import PostgresHub
from orchestrator.server.reaper import Reaper
from orchestrator.server.services import deployments, flow_runs, work_pools
from orchestrator.settings import Settings
from orchestrator.states import StateType
from tests.conftest import LiveServer, live_server
from tests.harness import wait_until

HEARTBEAT = 0.5  # seconds, as in tests/faults: silent after 1.5 s
REFUSED = 4.0  # how long heartbeats are refused: well over the silence and a reaper pass

# The heartbeats' writes fail in the database; the reaper's statements do not write heartbeats.
REFUSE_BEATS = """
CREATE FUNCTION refuse_beat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'heartbeats refused (test)' USING ERRCODE = '53300'; END $$;
CREATE TRIGGER refuse_worker_beat BEFORE UPDATE OF last_heartbeat ON workers FOR EACH ROW
  WHEN (NEW.last_heartbeat > OLD.last_heartbeat) EXECUTE FUNCTION refuse_beat();
CREATE TRIGGER refuse_run_beat BEFORE UPDATE OF heartbeat_at ON flow_runs FOR EACH ROW
  WHEN (NEW.heartbeat_at > OLD.heartbeat_at) EXECUTE FUNCTION refuse_beat();
"""
ACCEPT_BEATS = """
DROP TRIGGER refuse_worker_beat ON workers; DROP TRIGGER refuse_run_beat ON flow_runs;
DROP FUNCTION refuse_beat();
"""


@contextlib.contextmanager
def beats_refused(url: str) -> Iterator[None]:
    engine = make_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text(REFUSE_BEATS))
        yield
    finally:
        with engine.begin() as c:
            c.execute(text(ACCEPT_BEATS))
        engine.dispose()


def settings(url: str, home: Path) -> Settings:
    return Settings(home=home, database_url=url, api_url="http://unused/api", worker_heartbeat_seconds=HEARTBEAT,
                    reaper_interval_seconds=HEARTBEAT)


def running_run(sessions: Any, worker: str, *, beaten: bool) -> uuid.UUID:
    """A RUNNING run of pool p held by ``worker``; its holders beat just now, or never."""
    with sessions.begin() as session:
        if session.scalar(select(m.WorkPool).where(m.WorkPool.name == "p")) is None:
            work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        if beaten:
            work_pools.heartbeat(session, "p", worker)
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
        session.execute(update(m.FlowRun).where(m.FlowRun.id == run.id).values(
            state_type=StateType.RUNNING, state_name="Running", worker_name=worker,
            heartbeat_at=utcnow() if beaten else None))
        return run.id


def state(sessions: Any, run_id: uuid.UUID) -> str:
    with sessions() as session:
        return session.get(m.FlowRun, run_id).state_type  # type: ignore[union-attr,no-any-return]


@contextlib.contextmanager
def holders(api_url: str, run_id: uuid.UUID, worker: str) -> Iterator[None]:
    """The run's worker and its flow-run process, each beating every period through the API with
    the retries their clients have (30 s and 120 s: a 503 is sent again, 0.1 s doubling to 2 s)."""
    stop = threading.Event()
    clients = [Client(api_url, retry_seconds=30.0), Client(api_url, retry_seconds=120.0)]
    beats = [lambda: clients[0].heartbeat("p", worker), lambda: clients[1].flow_run_heartbeat(run_id)]

    def loop(beat: Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(OrchestratorError):
                beat()
            stop.wait(HEARTBEAT)

    threads = [threading.Thread(target=loop, args=(beat,), daemon=True) for beat in beats]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for client in clients:
            client.close()


@contextlib.contextmanager
def rows_locked(url: str, run_id: uuid.UUID, worker: str) -> Iterator[None]:
    """The holders' rows locked by another transaction: their heartbeats' writes wait (a stalled
    database, as for a spent pool's requests waiting for a connection), the reaper's reads do not."""
    engine = make_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text("SELECT 1 FROM workers WHERE name = :w FOR UPDATE"), {"w": worker})
            c.execute(text("SELECT 1 FROM flow_runs WHERE id = :id FOR UPDATE"), {"id": run_id})
            yield
    finally:
        engine.dispose()


def refusal_outlived(sessions: Any, fault: Any, live: uuid.UUID) -> None:
    """The reaper is trusting silence (a silent run is crashed); heartbeats are refused (or stuck)
    for a while, then recorded again; a run silent since is crashed: the reaper judges again, and
    the live run was never taken for dead."""
    dead = running_run(sessions, "gone", beaten=False)
    wait_until("the silent run crashed (the reaper trusts silence)",
               lambda: state(sessions, dead) == StateType.CRASHED, 30, 0.05)
    with fault:
        threading.Event().wait(REFUSED)  # the fault lasting: nothing to await but its end
    dead_after = running_run(sessions, "gone-too", beaten=False)
    wait_until("the run silent since the refusals crashed (silence trusted again)",
               lambda: state(sessions, dead_after) == StateType.CRASHED, 30, 0.05)
    assert state(sessions, live) == StateType.RUNNING


@pytest.fixture
def api_one(postgres_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """One server: its API and its reaper share one engine, the reaper's statements succeed."""
    from pools.broker import MemoryBroker

    with live_server(settings(postgres_url, tmp_path / "home"), broker=MemoryBroker()) as server:
        yield server


def test_heartbeats_refused_by_the_api_do_not_crash_a_live_run(api_one: LiveServer, postgres_url: str) -> None:
    sessions = api_one.ctx.sessions
    live = running_run(sessions, "w1", beaten=True)
    with holders(api_one.url, live, "w1"):
        refusal_outlived(sessions, beats_refused(postgres_url), live)


@pytest.mark.parametrize("fault", ["refused", "stalled"])
def test_heartbeats_refused_by_another_replicas_api_do_not_crash_a_live_run(
    postgres_url: str, tmp_path: Path, fault: str
) -> None:
    """Replica A serves the API only; replica B's reaper has its own engine and hears A's refusals
    through the event hub. Stalled, A's beats do not fail at all (a spent pool's fail after 30 s):
    a beat not recorded within a heartbeat period is told as refused, and again each period."""
    from pools.broker import MemoryBroker

    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    hub = PostgresHub(postgres_url)
    hub.start()
    reaper = Reaper(sessions, heartbeat_seconds=HEARTBEAT, interval_seconds=HEARTBEAT, cancelling_timeout_seconds=60,
                    hub=hub)
    try:
        with live_server(settings(postgres_url, tmp_path / "home"), broker=MemoryBroker(),
                         run_services=False) as api:
            live = running_run(sessions, "w1", beaten=True)
            with holders(api.url, live, "w1"):
                reaper.start()
                refusing = beats_refused(postgres_url) if fault == "refused" else rows_locked(postgres_url, live, "w1")
                refusal_outlived(sessions, refusing, live)
    finally:
        reaper.stop()
        hub.close()
        engine.dispose()


@pytest.fixture
def api_slow_reaper(postgres_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """One server whose reaper passes every 5 s (the default), its holders beating every 0.5 s."""
    from pools.broker import MemoryBroker

    config = settings(postgres_url, tmp_path / "home").model_copy(update={"reaper_interval_seconds": 5.0})
    with live_server(config, broker=MemoryBroker()) as server:
        yield server


def test_an_outage_between_two_reaper_passes_does_not_crash_a_live_run(
    api_slow_reaper: LiveServer, pg_admin: Any, postgres_url: str
) -> None:
    """PostgreSQL down for 2.5 s, between two passes of the reaper (none fails), then a pass at
    once, before the holders' retries (0.1 s doubling) reach the API: the reaper's connection is
    new and works, the holders have not beaten for longer than the silence (1.5 s). The beats the
    API answered with 503 meanwhile keep silence untrusted."""
    from tests.integration.test_reaper_outage import database_down

    sessions, reaper = api_slow_reaper.ctx.sessions, api_slow_reaper.ctx.reaper
    live = running_run(sessions, "w1", beaten=True)
    with holders(api_slow_reaper.url, live, "w1"):
        dead = running_run(sessions, "gone", beaten=False)
        wait_until("the silent run crashed (the reaper trusts silence)",
                   lambda: state(sessions, dead) == StateType.CRASHED, 30, 0.02)
        # The crashing pass ends (its workers-offline statement) a few ms after its commit, and is
        # counted then; nothing to await that is seen from here. The next pass is 5 s away.
        threading.Event().wait(0.3)
        passes = reaper.passes
        with database_down(pg_admin, postgres_url):
            threading.Event().wait(2.5)  # the outage lasting
        assert reaper.passes == passes, "a reaper pass fell in the outage: the test proves nothing"
        reaper.wake()
        wait_until("the reaper's pass after the outage", lambda: reaper.passes > passes, 10, 0.01)
        assert state(sessions, live) == StateType.RUNNING


def test_a_heartbeat_refused_for_the_request_itself_is_no_refusal(
    api_one: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat of an unknown run or pool is answered 404: the holder's mistake, not a beat the
    server lost, so silence stays trusted (a silent run is crashed as soon as it is due)."""
    caplog.set_level(logging.WARNING, logger="orchestrator.reaper")
    sessions = api_one.ctx.sessions
    dead = running_run(sessions, "gone", beaten=False)
    wait_until("the silent run crashed (the reaper trusts silence)",
               lambda: state(sessions, dead) == StateType.CRASHED, 30, 0.02)
    assert api_one.raw("POST", f"/flow_runs/{uuid.uuid4()}/heartbeat")[0] == 404
    assert api_one.raw("POST", "/work_pools/nope/workers/heartbeat", {"name": "w"})[0] == 404
    dead_after = running_run(sessions, "gone-too", beaten=False)
    wait_until("the next silent run crashed", lambda: state(sessions, dead_after) == StateType.CRASHED, 30, 0.02)
    assert not [r for r in caplog.records if "unrecorded" in r.getMessage()]
