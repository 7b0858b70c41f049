"""The reaper after its database was down, on PostgreSQL: a real outage (the test's database refuses
connections and its sessions are ended), the reaper's own loop running. Heartbeats cannot be
recorded while the database is down, so silence may count only once the database answers again:
a live holder beats again within one heartbeat period plus one client retry delay of that. Before,
the reaper counted that while from its last failed pass; after an outage longer than that while it
judged silence the moment the database was back, and crashed a run whose process was alive and
about to report COMPLETED (tests/faults, PostgreSQL restarted mid-run, under load)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import OperationalError

from orchestrator import schemas
from orchestrator.retries import RETRY_DELAY_MAX_SECONDS
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker
from orchestrator.server.db.types import utcnow
from orchestrator.server.reaper import Reaper
from orchestrator.server.services import deployments, flow_runs, run_columns, work_pools
from orchestrator.states import StateType
from tests.harness import wait_until

HEARTBEAT = 0.5  # seconds, as in tests/faults: silent after 1.5 s, a grace of 0.75 s
# How long the database stays down after the reaper's first failed pass: longer than the grace and
# shorter than the reaper's while of distrust (0.5 + 2 + 0.75 s), so that, counted from that
# failure, the while ends with the database up but before a live holder must have beaten again.
OUTAGE = 2.0


@pytest.fixture
def sessions(postgres_url: str) -> Iterator[Any]:
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@contextlib.contextmanager
def database_down(pg_admin: Any, url: str) -> Iterator[None]:
    """The database refuses new connections and its open ones are ended, as when PostgreSQL stops."""
    name = url.rsplit("/", 1)[1]
    with pg_admin.connect() as c:
        c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        c.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": name},
        )
    try:
        yield
    finally:
        with pg_admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))


def running_runs(sessions: Any, *workers: str) -> list[uuid.UUID]:
    """One RUNNING run per worker of pool p, its worker and process having just beaten."""
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(
            session,
            schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"),
        )
        ids = []
        for worker in workers:
            work_pools.heartbeat(session, "p", worker)
            run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
            session.execute(
                update(m.FlowRun)
                .where(m.FlowRun.id == run.id)
                .values(
                    state_type=StateType.RUNNING,
                    state_name="Running",
                    worker_name=worker,
                    heartbeat_at=utcnow(),
                )
            )
            ids.append(run.id)
    return ids


def state(sessions: Any, run_id: uuid.UUID) -> str:
    with sessions() as session:
        return session.get(m.FlowRun, run_id).state_type  # type: ignore[union-attr,no-any-return]


@contextlib.contextmanager
def beating(sessions: Any, run_id: uuid.UUID, worker: str) -> Iterator[None]:
    """The run's worker and flow-run process beat every heartbeat period, as live ones do."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            with contextlib.suppress(OperationalError), sessions.begin() as session:  # retried, as clients do
                work_pools.heartbeat(session, "p", worker)
                run_columns.heartbeat(session, run_id)
            stop.wait(HEARTBEAT)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_silence_counts_only_once_the_database_answers_again(
    pg_admin: Any, postgres_url: str, sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    live, dead = running_runs(sessions, "w1", "w2")
    reaper = Reaper(
        sessions, heartbeat_seconds=HEARTBEAT, interval_seconds=HEARTBEAT, cancelling_timeout_seconds=60
    )
    caplog.set_level(logging.ERROR, logger="orchestrator.service")
    reaper.start()
    try:
        with database_down(pg_admin, postgres_url):
            wait_until(
                "a reaper pass that failed",
                lambda: any(r.getMessage() == "reaper pass failed" for r in caplog.records),
                30,
                0.02,
            )
            time.sleep(OUTAGE)  # the outage goes on: no heartbeat can be recorded
        # Back. A live holder's heartbeat that failed meanwhile is sent again after one retry
        # delay at most, and then every period: the live run's holders do that, at the latest.
        time.sleep(HEARTBEAT + RETRY_DELAY_MAX_SECONDS)
        with beating(sessions, live, "w1"):
            wait_until(
                "the dead run crashed (silence counts again)",
                lambda: state(sessions, dead) == StateType.CRASHED,
                60,
                0.05,
            )
            assert state(sessions, live) == StateType.RUNNING
    finally:
        reaper.stop()
