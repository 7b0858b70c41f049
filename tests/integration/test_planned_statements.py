"""The run path's statements are planned once per pooled connection on PostgreSQL
(``orchestrator/sql.py``): prepared at their first execution, run on their generic plan from the
second, in the transactions they open only; kept prepared across the rollbacks of other sessions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator import schemas
from orchestrator.errors import NotFound
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from orchestrator.states import StateType

CLAIM_READ = "SELECT flow_runs.id, flow_runs.state_type%FOR SHARE OF work_pools%"
# The ordinary claim's one statement before its state row: its update, with the read's locks (claims._folded).
CLAIM = "UPDATE flow_runs SET%FOR SHARE OF p, q, d) AS c%"


@pytest.fixture
def sessions(postgres_url: str) -> Iterator[Any]:
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _runs(sessions: Any, count: int) -> list[uuid.UUID]:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        return [flow_runs.create(session, deployment.id, schemas.FlowRunCreate())[0].id for _ in range(count)]


def _plans(session: Any, pattern: str) -> list[tuple[int, int]]:
    """(generic, custom) plans so far of this connection's prepared statements like ``pattern``."""
    return [tuple(r) for r in session.execute(text(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE :p"), {"p": pattern})]


def test_a_fresh_connection_runs_the_claim_on_its_generic_plan_from_the_second_claim(sessions: Any) -> None:
    first, second = _runs(sessions, 2)
    with sessions() as session:  # the engine's one pooled connection, opened here
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar()
        assert _plans(session, CLAIM) == []
    for run_id in (first, second):
        with sessions.begin() as session:
            assert isinstance(claims.claim(session, run_id, "w"), claims.Claimed)
            # The setting is the claim's transaction's, and only its own statements': this one
            # (not marked) runs on PostgreSQL's default.
            assert session.execute(text("SELECT current_setting('plan_cache_mode')")).scalar() == "auto"
        # A session that only reads ends with a rollback (psycopg's own would forget every
        # prepared statement of the connection).
        with sessions() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar() == backend
    with sessions() as session:
        # Planned once (the first claim's generic plan), reused by the second: no custom plan.
        assert _plans(session, CLAIM) == [(2, 0)]
        assert session.execute(text("SELECT current_setting('plan_cache_mode')")).scalar() == "auto"


def test_the_transitions_of_a_run_are_prepared_and_a_failed_claim_leaves_the_connection_usable(
        sessions: Any) -> None:
    (run_id,) = _runs(sessions, 1)
    with pytest.raises(NotFound), sessions.begin() as session:
        claims.claim(session, uuid.uuid4(), "w")  # the read finds nothing: the transaction rolls back
    with sessions.begin() as session:
        claims.claim(session, run_id, "w")
    for state in (StateType.RUNNING, StateType.COMPLETED):
        with sessions.begin() as session:
            flow_runs.set_state(session, run_id, schemas.StateCreate(type=state))
    with sessions() as session:
        assert session.get(m.FlowRun, run_id).state_type == StateType.COMPLETED
        assert _plans(session, CLAIM) == [(2, 0)]  # the failed claim's and the claim's
        assert _plans(session, CLAIM_READ) == [(1, 0)]  # the failed claim's, after its update matched nothing
        # Each transition's UPDATE (claim twice, RUNNING, COMPLETED: three shapes) and the state row's
        # statement (three times) ran generic plans only.
        updates = _plans(session, "UPDATE flow_runs SET state_type%")
        assert sorted(updates) == [(1, 0), (1, 0), (2, 0)], updates
        assert _plans(session, "WITH new_state AS%") == [(3, 0)]
