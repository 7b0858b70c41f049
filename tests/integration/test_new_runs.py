"""``insert_runs``, the one writer of new runs (API, scheduler, backfill), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, work_pools
from orchestrator.server.services.new_runs import CHUNK, insert_runs, run_values
from orchestrator.states import StateType

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def deployment(sessions: Any) -> m.Deployment:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        created, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        session.expunge(created)
        return created


def row(deployment: m.Deployment, key: str | None = None, **changes: Any) -> dict[str, Any]:
    values = run_values(
        flow_id=deployment.flow_id, deployment_id=deployment.id, deployment_version="7", work_pool_name="p",
        work_queue_name="default", parameters={"x": [1, {"y": None}]}, job_variables={"env": {"A": "1"}},
        tags=["b", "a", "b"], idempotency_key=key, expected_start_time=T0 + dt.timedelta(hours=1), now=T0)
    return {**values, **changes}


def test_run_values_sets_every_column(deployment: m.Deployment) -> None:
    """A column added to ``flow_runs`` must be decided here, for every creator at once."""
    assert set(row(deployment)) == {c.key for c in m.FlowRun.__table__.columns}


def test_a_run_is_written_as_built_with_its_first_state(sessions: Any, deployment: m.Deployment) -> None:
    built = row(deployment, "k", dispatched_at=T0)
    with sessions.begin() as session:
        assert insert_runs(session, [built]) == [built["id"]]
    with sessions() as session:
        stored = session.get(m.FlowRun, built["id"])
        assert stored is not None
        for column in m.FlowRun.__table__.columns:
            assert getattr(stored, column.key) == built[column.key], column.key
        assert stored.tags == ["a", "b"]
        history = session.scalars(select(m.FlowRunState).where(m.FlowRunState.flow_run_id == built["id"])).all()
        assert [(h.type, h.name, h.message, h.timestamp) for h in history] == [
            (StateType.SCHEDULED, "Scheduled", None, T0)]


def test_an_existing_key_is_skipped_and_only_landed_ids_come_back(sessions: Any, deployment: m.Deployment) -> None:
    first = row(deployment, "same")
    with sessions.begin() as session:
        insert_runs(session, [first])
    again, fresh, keyless = row(deployment, "same"), row(deployment, "other"), row(deployment)
    with sessions.begin() as session:
        assert sorted(insert_runs(session, [again, fresh, keyless])) == sorted([fresh["id"], keyless["id"]])
    with sessions() as session:
        assert session.get(m.FlowRun, again["id"]) is None
        assert session.scalar(select(func.count()).select_from(m.FlowRunState)) == 3


def test_many_runs_go_in_chunks(sessions: Any, deployment: m.Deployment) -> None:
    rows = [row(deployment, f"k{i}") for i in range(CHUNK * 2 + 3)]
    with sessions.begin() as session:
        assert len(insert_runs(session, rows)) == len(rows)
        assert insert_runs(session, []) == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(m.FlowRun)) == len(rows)
        assert session.scalar(select(func.count()).select_from(m.FlowRunState)) == len(rows)
        ids = set(session.scalars(select(m.FlowRunState.flow_run_id)))
        assert ids == {r["id"] for r in rows}
        assert all(isinstance(i, uuid.UUID) for i in ids)
