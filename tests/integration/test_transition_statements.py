"""A heartbeat's round trips (services/transitions.py: heartbeat): a flow-run process beats as it
starts, while its run is still PENDING, beside the claim and its own RUNNING report; that beat only
reads the run. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import event, select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, flow_runs, work_pools
from orchestrator.states import StateType


@pytest.fixture
def run_id(sessions: Any) -> uuid.UUID:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
        return run.id


def _statements_of(sessions: Any, work: Any) -> list[str]:
    """The statements ``work(session)`` sent, in one transaction."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with sessions.begin() as session:
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", seen)
        try:
            work(session)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    return statements


def test_the_first_beat_of_a_pending_run_only_reads_it(sessions: Any, run_id: uuid.UUID) -> None:
    """One read, no write: a PENDING run's heartbeat is not recorded (services/transitions.py)."""
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
    answers: list[Any] = []
    statements = _statements_of(sessions, lambda session: answers.append(flow_runs.heartbeat(session, run_id)))
    assert [(a.state_type, a.heartbeat_at) for a in answers] == [(StateType.PENDING, None)]
    assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT"), statements


def test_a_beat_of_a_running_run_writes_its_heartbeat_and_answers_it(sessions: Any, run_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
    with sessions.begin() as session:
        flow_runs.transition(session, run_id, StateType.RUNNING)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with sessions.begin() as session:
        answer = flow_runs.heartbeat(session, run_id, now=at)
        assert answer.state_type == StateType.RUNNING and answer.heartbeat_at == at
    with sessions() as session:
        assert session.scalar(select(m.FlowRun.heartbeat_at).where(m.FlowRun.id == run_id)) == at
