"""The ordinary claim on PostgreSQL reads nothing before its guarded update: the update takes the
read's locks and checks and returns what the answer needs (3 statements, not 4: issue 22,
``claims._folded``). Every claim it does not take -- paused, under a limit, another pool's worker,
not due, claimed by another, a lost answer's repeat -- goes the way that reads first and ends as
it did. SQLite reads first, as before."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text

from orchestrator import schemas
from orchestrator.errors import Conflict, InvalidTransition, NotClaimableNow
from orchestrator.server.db import models as m
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from tests.harness import statements_sent

FOLDED = "FOR SHARE OF p, q, d) AS c WHERE flow_runs.id"
# psycopg keeps its parsing of a statement's placeholders only up to 4,096 bytes (its
# ``MAX_CACHED_STATEMENT_LENGTH``); a margin for a column or two more.
PSYCOPG_CACHED_LENGTH = 4096


def _world(
    sessions: Any,
    *,
    pool_limit: int | None = None,
    deployment_limit: int | None = None,
    queue: schemas.WorkQueueCreate | None = None,
    due_in: dt.timedelta = dt.timedelta(0),
) -> uuid.UUID:
    with sessions.begin() as session:
        work_pools.create(
            session,
            schemas.WorkPoolCreate(
                name="p",
                type="process",
                concurrency_limit=pool_limit,
                base_job_template={"job_configuration": {"x": 1}},
            ),
        )
        if queue is not None:
            work_pools.create_queue(session, "p", queue)
        deployment, _ = deployments.upsert(
            session,
            schemas.DeploymentCreate(
                flow_name="f",
                name="d",
                entrypoint="f.py:f",
                work_pool_name="p",
                concurrency_limit=deployment_limit,
                parameters={"a": 1},
                tags=["t"],
                schedules=[schemas.ScheduleCreate(interval=60, slug="minutely")],
            ),
        )
        run, _ = flow_runs.create(
            session,
            deployment.id,
            schemas.FlowRunCreate(
                work_queue_name=queue.name if queue else None, scheduled_time=dt.datetime.now(dt.UTC) + due_in
            ),
        )
        return run.id


def _claim(
    sessions: Any, run_id: uuid.UUID, worker: str = "w", pool: str | None = None
) -> tuple[Any, list[str]]:
    with sessions.begin() as session, statements_sent(session.get_bind()) as sent:
        try:
            outcome: Any = claims.claim(session, run_id, worker, pool=pool)
        except (Conflict, InvalidTransition) as error:
            outcome = error
    return outcome, [s.statement for s in sent]


def _states(sessions: Any, run_id: uuid.UUID) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).where(m.FlowRunState.flow_run_id == run_id))


def test_a_claim_is_answered_from_its_update_as_from_its_read(sessions: Any) -> None:
    run_id = _world(sessions)
    claimed, statements = _claim(sessions, run_id, pool="p")
    assert isinstance(claimed, claims.Claimed)
    with sessions() as session:
        postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:  # the update first, then the state row and the event
        assert (
            len(statements) == 3 and statements[0].startswith("UPDATE flow_runs") and FOLDED in statements[0]
        )
        assert len(statements[0].encode()) <= PSYCOPG_CACHED_LENGTH - 300, len(statements[0].encode())
    else:
        assert statements[0].startswith("SELECT") and all(FOLDED not in s for s in statements)
    # Its repeat (the answer lost) reads first on both databases: the same answer.
    repeat, statements = _claim(sessions, run_id, pool="p")
    assert isinstance(repeat, claims.Claimed)
    assert any(s.startswith("SELECT flow_runs.id, flow_runs.state_type") for s in statements)
    assert repeat.answer.model_dump() == claimed.answer.model_dump()
    answer = claimed.answer
    assert (answer.flow_run.state.type, answer.flow_run.worker_name) == ("PENDING", "w")
    assert answer.base_job_template == {"job_configuration": {"x": 1}}
    assert (answer.deployment.parameters, answer.deployment.tags) == ({"a": 1}, ["t"])
    assert [s.slug for s in answer.deployment.schedules] == ["minutely"]


def _paused_pool(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.update(session, "p", schemas.WorkPoolUpdate(paused=True))


def _paused_queue(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.update_queue(session, "p", "default", schemas.WorkQueueUpdate(paused=True))


def _claimed_by_another(sessions: Any) -> None:
    pass  # the run is claimed first by "other" (below)


CASES = {
    # name: (the world, what happens before the claim, the pool the worker serves, what the claim ends in)
    "paused pool": ({}, _paused_pool, "p", "work pool 'p' is paused"),
    "paused queue": ({}, _paused_queue, "p", "work queue 'default' of pool 'p' is paused"),
    "pool limit": ({"pool_limit": 5}, None, "p", "PENDING"),
    "deployment limit": ({"deployment_limit": 5}, None, "p", "PENDING"),
    "queue limit": ({"queue": schemas.WorkQueueCreate(name="q", concurrency_limit=5)}, None, "p", "PENDING"),
    "another pool's worker": ({}, None, "elsewhere", "belongs to pool 'p', not 'elsewhere'"),
    "not due": ({"due_in": dt.timedelta(hours=1)}, None, None, "is not due until"),
    "claimed by another": ({}, _claimed_by_another, None, "is PENDING; it cannot move to PENDING"),
}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_claim_its_update_does_not_take_reads_first_and_ends_as_before(sessions: Any, case: str) -> None:
    world, before, pool, ends = CASES[case]
    run_id = _world(sessions, **world)
    if before is _claimed_by_another:
        assert isinstance(_claim(sessions, run_id, "other")[0], claims.Claimed)
    elif before is not None:
        before(sessions)
    states = _states(sessions, run_id)
    outcome, statements = _claim(sessions, run_id, pool=pool)
    # The update matched nothing and wrote nothing; the read came after it.
    assert FOLDED in statements[0] and statements[1].startswith("SELECT flow_runs.id, flow_runs.state_type")
    if ends == "PENDING":  # a limit with room: claimed after check_slots counted
        assert isinstance(outcome, claims.Claimed) and outcome.answer.flow_run.state.type == "PENDING"
        assert _states(sessions, run_id) == states + 1
        return
    error = outcome.error if isinstance(outcome, claims.Refused) else outcome
    assert isinstance(error, NotClaimableNow if "paused" in case else (Conflict, InvalidTransition))
    assert ends in str(error)
    assert _states(sessions, run_id) == states


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_the_update_answers_the_deployment_byte_for_byte_as_the_read(sessions: Any, zone: str) -> None:
    """The folded claim (its update returns the deployment, its flow's name and its pool's job
    template) and the claim that reads first (the same worker's claim again) answer the same bytes,
    for values of every kind those columns hold, whatever the session's time zone."""
    odd = {"float": 1.5, "tiny": 1e-300, "large": 10**30, "text": 'é\n"\\\u2028 😀', "none": None,
           "nested": {"list": [1, 2.0, True, False, {}, []], "zero": -0.0}}
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process", base_job_template={
            "job_configuration": {"command": "{{ command }}", "env": odd},
            "variables": {"properties": {"env": {"type": "object"}, "n": {"type": "number"}}}}))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="flöw", name="dé", entrypoint="f.py:f", work_pool_name="p", path="/opt/ü", parameters=odd,
            parameter_openapi_schema={"type": "object", "properties": {}}, enforce_parameter_schema=False,
            version="1.0", description="ünïcode\tdescription", tags=["a", "ü"], work_queue_name="default",
            job_variables={"env": {"K": "v"}, "n": 3.25}, pull_steps=[{"set_working_directory": {
                "directory": "/tmp"}}], concurrency_collision_strategy="CANCEL_NEW", crash_retries=2,
            catchup="LATEST", max_late_runs=7))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
    with sessions.begin() as session:
        session.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
        with statements_sent(session.get_bind()) as sent:
            claimed = claims.claim(session, run.id, "w", pool="p")
    assert FOLDED in sent[0].statement
    with sessions.begin() as session:
        session.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
        repeat = claims.claim(session, run.id, "w", pool="p")
    assert isinstance(claimed, claims.Claimed) and isinstance(repeat, claims.Claimed)
    assert claimed.answer.model_dump_json() == repeat.answer.model_dump_json()
    assert claimed.answer.deployment.parameters == odd
