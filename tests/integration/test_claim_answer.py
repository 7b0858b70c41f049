"""The claim's answer: the deployment's schedules, read with the run's other rows when there are
none (services/claims.py), listed as before when there are some. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from orchestrator import schemas
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from tests.harness import statements_sent


def _run(sessions: Any, name: str, schedules: list[schemas.ScheduleCreate]) -> uuid.UUID:
    with sessions.begin() as session:
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name=name, entrypoint="f.py:f", work_pool_name="p", schedules=schedules))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate(), now=dt.datetime.now(dt.UTC))
        return run.id


def _claimed(sessions: Any, run_id: uuid.UUID) -> tuple[schemas.Claim, list[str]]:
    """The claim's answer, and the statements the claim sent."""
    with sessions.begin() as session, statements_sent(session.get_bind()) as sent:
        outcome = claims.claim(session, run_id, "w", now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert isinstance(outcome, claims.Claimed)
    return outcome.answer, [s.statement for s in sent]


def test_a_claim_of_a_deployment_without_schedules_reads_none_of_its_own(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
    answer, statements = _claimed(sessions, _run(sessions, "unscheduled", []))
    assert answer.deployment.schedules == []
    # The schedules' existence is asked in the claim's first statement; nothing reads them after it.
    assert "deployment_schedules" in statements[0]
    assert [s for s in statements[1:] if "FROM deployment_schedules" in s] == []


def test_a_claim_of_a_scheduled_deployment_answers_its_schedules(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
    answer, _ = _claimed(sessions, _run(sessions, "hourly", [schemas.ScheduleCreate(interval=3600, slug="hourly")]))
    assert [s.slug for s in answer.deployment.schedules] == ["hourly"]
    assert answer.deployment.schedules[0].interval == 3600
