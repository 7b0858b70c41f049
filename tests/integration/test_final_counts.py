"""``/metrics`` counts runs by state without reading the history: non-final states live, final
states from the counts the database keeps with triggers (``db/final_counts.py``). The counts follow
every way a run enters, leaves or is deleted in a final state, survive folding, and a database
upgraded by the migration (not built from the models) gets the same triggers and the runs it had.
On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, inspect, select, update

from orchestrator import schemas
from orchestrator.server.db import final_counts
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services.new_runs import run_values
from tests.integration.test_api import make_deployment


def scraped(api: Any) -> dict[str, float]:
    status, text = api.raw("GET", "/metrics")
    assert status == 200
    return {state: float(value) for state, value in re.findall(r'^orch_flow_runs\{state="(\w+)"\} (\S+)$', text, re.MULTILINE)}


def set_states(api: Any, ids: list[Any], state: str) -> None:
    with api.ctx.sessions.begin() as session:
        session.execute(update(m.FlowRun).where(m.FlowRun.id.in_(ids)).values(state_type=state, state_name=state.title()))


def test_metrics_follow_runs_into_and_out_of_final_states(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    ids = [client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id for _ in range(6)]
    set_states(api, ids[:3], "COMPLETED")
    set_states(api, ids[3:4], "FAILED")
    counts = scraped(api)
    assert (counts["SCHEDULED"], counts["COMPLETED"], counts["FAILED"], counts["CRASHED"]) == (2, 3, 1, 0)

    set_states(api, ids[:1], "SCHEDULED")  # a final run started again (a crash restart)
    set_states(api, ids[1:2], "COMPLETED")  # no change: counted once
    with api.ctx.sessions.begin() as session:  # deleted (retention): no longer counted
        session.execute(delete(m.FlowRun).where(m.FlowRun.id.in_(ids[2:4])))
    counts = scraped(api)
    assert (counts["SCHEDULED"], counts["COMPLETED"], counts["FAILED"]) == (3, 1, 0)


def test_a_scrape_folds_the_counts(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    ids = [client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id for _ in range(3)]
    for _ in range(final_counts.COMPACT_ABOVE):  # many changes: many delta rows
        set_states(api, ids, "CRASHED")
        set_states(api, ids, "SCHEDULED")
    set_states(api, ids[:2], "CRASHED")
    assert scraped(api)["CRASHED"] == 2
    with api.ctx.sessions() as session:
        assert (session.scalar(select(func.count()).select_from(m.flow_run_final_counts)) or 0) <= 4
    assert scraped(api)["CRASHED"] == 2


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "empty_postgres"))


def test_the_migration_counts_existing_runs_and_installs_the_triggers(empty_database: str) -> None:
    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from tests.migrations import upgrade_to

    upgrade_to(empty_database, "0009")  # a database of the release before
    engine = make_engine(empty_database)
    sessions = make_sessionmaker(engine)
    try:
        then = {column["name"] for column in inspect(engine).get_columns("flow_runs")}  # the runs' columns at 0009
        with sessions.begin() as session:
            flow = m.Flow(name="f")
            session.add(flow)
            session.flush()
            runs = [{**run_values(flow_id=flow.id, deployment_id=None, deployment_version=None, work_pool_name=None,
                                  work_queue_name=None, parameters={}, job_variables={}, tags=(),
                                  idempotency_key=None, expected_start_time=utcnow(), now=utcnow()),
                     "state_type": state, "state_name": state.title()} for state in ("COMPLETED", "COMPLETED", "RUNNING")]
            session.execute(insert(m.FlowRun.__table__), [{k: v for k, v in run.items() if k in then} for run in runs])
        upgrade_to(empty_database, "head")
        with sessions.begin() as session:
            session.execute(update(m.FlowRun).where(m.FlowRun.state_type == "RUNNING").values(state_type="FAILED"))
        with sessions() as session:
            assert final_counts.read(session)[0] == {"COMPLETED": 2, "FAILED": 1}
    finally:
        engine.dispose()
