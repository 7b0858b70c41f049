"""``db.types.among``: the PostgreSQL form must read its ids once per statement, whatever plan the
database picks. ``= ANY(CAST(:ids AS uuid[]))`` under a generic plan that scans the table cast the
parameter's text again for every row it filtered: 2.9 s for 500 ids against 10,000 deployments,
most of a scheduler pass over 10,000 deployments (bench/RESULTS.md). The plan is checked, not
timed: psycopg prepares a statement after a few executions, so a generic plan is what runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.dialects import postgresql

from orchestrator.server.db import models as m
from orchestrator.server.db.session import migrate
from orchestrator.server.db.types import among


@pytest.mark.parametrize("scan", ["seq", "default"])
def test_among_evaluates_its_ids_once_under_a_generic_plan(postgres_url: str, scan: str) -> None:
    engine = create_engine(postgres_url)
    try:
        migrate(engine)
        ids = [uuid.uuid4() for _ in range(50)]
        statement = select(m.Deployment.id, m.Deployment.name).where(among(m.Deployment.id, ids, "postgresql"))
        compiled = statement.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))
        (value,) = compiled.params.values()
        with engine.connect() as connection:
            connection.execute(text("SET plan_cache_mode = force_generic_plan"))
            if scan == "seq":  # the plan a table of unknown size may get
                connection.execute(text("SET enable_indexscan = off"))
                connection.execute(text("SET enable_bitmapscan = off"))
            connection.exec_driver_sql(f"PREPARE among_q(varchar) AS {compiled}")
            # A literal (UUIDs only: nothing to quote): EXPLAIN EXECUTE takes no bound parameter.
            plan: list[Any] = connection.exec_driver_sql(
                f"EXPLAIN (VERBOSE) EXECUTE among_q('{value}')").scalars().all()
    finally:
        engine.dispose()
    text_plan = "\n".join(plan)
    # Each row filtered against the cast parameter is the per-row cast; the unnest reads it once.
    filters = [line for line in plan if "Filter:" in line and "uuid[]" in line]
    assert not filters, text_plan
    assert "unnest" in text_plan, text_plan
