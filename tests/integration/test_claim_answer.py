"""The claim's answer: the deployment's schedules, read with the run's other rows when there are
none (services/claims.py), listed as before when there are some; its deployment and job template
as their reads show them; and no ORM entity loaded by a claim (its pool, queue and deployment are
read as columns, issue 22). SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import event

from orchestrator import schemas
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from tests.harness import statements_sent
from tests.integration.test_api import make_deployment


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
    answer, statements = _claimed(sessions, _run(sessions, "hourly", [
        schemas.ScheduleCreate(interval=3600, slug="hourly", parameters={"x": 1}),
        schemas.ScheduleCreate(cron="0 9 * * 1", slug="weekly", timezone="Europe/Paris", active=False)]))
    assert [s.slug for s in answer.deployment.schedules] == ["hourly", "weekly"]
    assert answer.deployment.schedules[0].interval == 3600 and answer.deployment.schedules[0].parameters == {"x": 1}
    weekly = answer.deployment.schedules[1]
    assert (weekly.cron, weekly.timezone, weekly.active) == ("0 9 * * 1", "Europe/Paris", False)
    assert weekly.created.tzinfo is not None and weekly.created.utcoffset() == dt.timedelta(0)
    with sessions() as session:
        postgresql = session.get_bind().dialect.name == "postgresql"
    # On PostgreSQL the claim's first statement lists them: 3 statements, as for a deployment without
    # schedules (a read of its own after the update was one more, issue 22); SQLite reads them after it.
    assert len([s for s in statements[1:] if "FROM deployment_schedules" in s]) == (0 if postgresql else 1)
    if postgresql:
        assert len(statements) == 3


def test_a_claim_loads_no_entity(sessions: Any) -> None:
    """Not the run, nor its pool, queue, deployment or schedules: the claim reads columns, and
    answers from them (a claim that loads none is ~20 % less of the server's CPU)."""
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
    run_id = _run(sessions, "hourly", [schemas.ScheduleCreate(interval=3600, slug="hourly")])
    loaded: list[Any] = []
    for _ in ("the claim", "its repeat, whose answer was lost"):
        with sessions.begin() as session:
            event.listen(session, "loaded_as_persistent", lambda _session, instance: loaded.append(instance))
            outcome = claims.claim(session, run_id, "w", now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
            assert isinstance(outcome, claims.Claimed)
            assert [s.slug for s in outcome.answer.deployment.schedules] == ["hourly"]
            assert list(session.identity_map.values()) == []
    assert loaded == []


def test_the_claim_answers_the_deployment_and_job_template_as_their_reads_do(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(
        client, job_variables={"env": {"A": "1"}}, pull_steps=[{"set_working_directory": {"directory": "/tmp"}}],
        schedules=[schemas.ScheduleCreate(interval=60, slug="minutely"), schemas.ScheduleCreate(cron="0 * * * *")],
        concurrency_limit=3, crash_retries=2, description="d", version="v1", path="/src")
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    claim = client.request("POST", f"/flow_runs/{run.id}/claim", body={"worker_name": "w", "pool": "local"})
    read = client.request("GET", f"/deployments/{deployment.id}")
    assert set(claim["deployment"]) == set(read) == set(schemas.Deployment.model_fields)
    assert {k: v for k, v in claim["deployment"].items() if v != read[k]} == {}
    assert len(claim["deployment"]["schedules"]) == 2 and claim["deployment"]["concurrency_limit"] == 3
    assert claim["base_job_template"] == client.request("GET", "/work_pools/local")["base_job_template"] != {}
