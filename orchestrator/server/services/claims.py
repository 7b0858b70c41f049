"""A worker's claim of a due run: SCHEDULED -> PENDING for exactly one claimant, after the
admission check (``services/admission.py``), answered with everything the worker needs to start
it -- the run, its deployment and its pool's job template -- so nobody fetches them again."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Row, Select, and_, bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.errors import Conflict, NotClaimableNow
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import (
    admission,
    deployments,
    flow_runs,
    run_columns,
    run_statements,
    schedules,
    transitions,
    work_pools,
)
from orchestrator.sql import GENERIC, PLAN
from orchestrator.states import StateType


@dataclass(frozen=True)
class Claimed:
    run: run_statements.RunRow  # as the claim left it (for the caller's announcements)
    answer: schemas.Claim  # what the worker gets


@dataclass(frozen=True)
class Refused:
    """The run may not start now. Its publish mark is cleared in the caller's transaction, so
    the dispatcher plans it again; the caller commits, tells the dispatchers, and raises ``error``."""

    error: NotClaimableNow


def claim(session: Session, run_id: uuid.UUID, worker_name: str, *, pool: str | None = None,
          now: dt.datetime | None = None) -> Claimed | Refused:
    """Claim ``run_id`` for ``worker_name`` (serving ``pool``, when given). Raises ``Conflict``
    (``InvalidTransition``) when another claimant won or the run is not claimable at all; returns
    ``Refused`` when it only may not start now (paused, or a concurrency limit reached)."""
    if session.get_bind().dialect.name == "postgresql":
        claimed = _folded(session, run_id, worker_name, pool, now)
        if claimed is not None:
            return claimed
    row = _row(session, run_id)
    if is_repeat(row, worker_name):  # rare: the run's other columns are read for its answer
        run = run_statements.read(session, run_id)
        if is_repeat(run, worker_name):  # still (else the claim's update says why not)
            return Claimed(run, _answer(session, run, row))
    pool_name = row.work_pool_name
    try:
        admission.check_open(pool_paused=row.pool_paused, queue_paused=row.queue_paused, pool_name=pool_name,
                             queue_name=row.work_queue_name)
        if pool is not None and pool != pool_name:
            raise Conflict(f"flow run {run_id} belongs to pool '{pool_name}', not '{pool}'")
        admission.check_slots(session, row, (row.pool_limit, row.queue_limit, row[_DEPLOYMENT_LIMIT]))
    except NotClaimableNow as error:  # nothing written yet but locks on the rows of its limits
        run_columns.unmark_published(session, [run_id])
        return Refused(error)
    claimed = transitions.claim(session, run_id, worker_name, now=now)
    return Claimed(claimed, _answer(session, claimed, row))


def _folded(session: Session, run_id: uuid.UUID, worker_name: str, pool: str | None,
            now: dt.datetime | None) -> Claimed | None:
    """The ordinary claim in one statement fewer (PostgreSQL): the claim's guarded update also
    takes ``_row``'s locks and checks (``admission.open_unlimited``, the pool asked for) on a
    sub-select of the run's pool, queue and deployment ``FOR SHARE``, and returns what the answer
    needs from it. None when it matched nothing -- another claimant won, a repeat, not due, paused,
    a limit to count, another pool's worker, no deployment -- and nothing was written: ``claim``
    then goes the way that reads first and says which (bench/RESULTS.md, issue 22: 3 statements
    and ~460k instructions fewer a claim than 4)."""
    guard, returning = _claimable(pool is not None)
    if pool is not None:
        guard = transitions.Guard(guard.name, guard.condition, {"pool": pool})
    now = now or utcnow()
    run = transitions.attempt(session, run_id, StateType.PENDING, only_from=[StateType.SCHEDULED],
                              guards=[transitions.due(now), guard], effects=[transitions.claimed_by(worker_name)],
                              returning=returning, now=now)
    return None if run is None else Claimed(run, _answer(session, run, run))


def _row(session: Session, run_id: uuid.UUID) -> Row[Any]:
    """The run with what its claim reads of its pool, queue and deployment (and its flow's name,
    for the answer) in one statement, the pool, queue and deployment read ``FOR SHARE`` on
    PostgreSQL: they hold its concurrency limits, which may not change until this claim has
    committed (``admission.check_slots``). The run itself is locked by the claim's update. When
    one is missing, each is read on its own and raises the error its own read would
    (``NotFound``, or ``Conflict`` for a run without a deployment).

    A row of columns, no ORM entity: the run's ``_CHECKED`` columns by their names (what
    ``is_repeat`` and ``admission.check_slots`` read; the answer is the claim's update's row),
    then its pool's and queue's pause and limits, the pool's job template, the deployment's
    ``deployments.COLUMNS`` (the answer's, read by position) and whether the deployment has
    schedules: the answer lists them, and one without any (most that workers run) then needs no
    read of them. Loaded as entities, the pool, queue and deployment were the claim's largest
    cost after its statements (bench/RESULTS.md, issue 22, branch h2)."""
    statement = _statement(session.get_bind().dialect.name == "postgresql")
    row = session.execute(statement, {run_statements.RUN_ID: run_id}).one_or_none()
    if row is not None:
        return row
    run = run_statements.read(session, run_id)
    if run.deployment_id is None:
        raise Conflict(f"flow run {run_id} has no deployment to run")
    pool_row = work_pools.get(session, run.work_pool_name or "")
    work_pools.get_queue(session, pool_row.name, run.work_queue_name or "")
    deployments.get(session, run.deployment_id)
    row = session.execute(statement, {run_statements.RUN_ID: run_id}).one_or_none()
    if row is None:  # each is there now, but was not when the statement ran: changed under the claim
        raise Conflict(f"flow run {run_id}'s pool, queue or deployment changed during its claim; claim it again")
    return row


# What the claim reads of the run before its update (its answer is the update's row, every column).
_CHECKED = ("id", "state_type", "worker_name", "infrastructure_id", "work_pool_name", "work_queue_name",
            "deployment_id")
# The deployment's ``COLUMNS`` end ``_statement``'s row, in that order.
_DEPLOYMENT_AT = -len(deployments.COLUMNS)
_DEPLOYMENT_LIMIT = _DEPLOYMENT_AT + deployments.COLUMNS.index("concurrency_limit")


@functools.cache
def _statement(postgresql: bool) -> Select[Any]:
    """``_row``'s statement, built once (``services/run_statements.py`` says why): a Core
    statement, on the tables' columns (an ORM attribute would make it an ORM statement). On
    PostgreSQL it also lists the deployment's schedules (``json_agg``): the answer lists them, and a
    claim of a scheduled deployment read them with a statement of its own after the update (5
    statements instead of 4: bench/RESULTS.md, issue 22, branch h1). Elsewhere, whether it has any."""
    runs, pools, queues = run_statements.RUNS, m.WorkPool.__table__, m.WorkQueue.__table__
    deployment, flow = m.Deployment.__table__, m.Flow.__table__
    statement = (select(*(runs[name] for name in _CHECKED), pools.c.paused.label("pool_paused"),
                        pools.c.concurrency_limit.label("pool_limit"),
                        pools.c.base_job_template.label("base_job_template"),
                        queues.c.paused.label("queue_paused"), queues.c.concurrency_limit.label("queue_limit"),
                        flow.c.name.label("flow_name"))
                 .select_from(m.FlowRun.__table__)
                 .join(pools, pools.c.name == runs.work_pool_name)
                 .join(queues, and_(queues.c.pool_id == pools.c.id, queues.c.name == runs.work_queue_name))
                 .join(deployment, deployment.c.id == runs.deployment_id)
                 .join(flow, flow.c.id == deployment.c.flow_id))
    if postgresql:
        statement = statement.add_columns(_listed(deployment.c.id))
    else:
        table = m.DeploymentSchedule.__table__
        scheduled = exists().where(table.c.deployment_id == deployment.c.id).correlate(deployment)
        statement = statement.add_columns(scheduled.label("has_schedules"))
    return (statement.add_columns(*(deployment.c[name].label(f"deployment__{name}") for name in deployments.COLUMNS))
            .where(runs.id == bindparam(run_statements.RUN_ID))
            .with_for_update(read=True, of=[pools, queues, deployment])
            .execution_options(**{PLAN: GENERIC}))  # planned once per connection (``orchestrator/sql.py``)


def _listed(deployment_id: Any) -> Any:
    """The deployment's schedules in one JSON column, NULL when there are none (a deployment
    without schedules costs what a boolean does), in the order its ``schedules`` relationship
    lists them (PostgreSQL)."""
    table = m.DeploymentSchedule.__table__.alias("s")  # short: ``_claimable`` says why
    return (select(func.json_agg(aggregate_order_by(
                func.json_build_array(*(table.c[name] for name in _Schedule._fields)), table.c.created)))
            .where(table.c.deployment_id == deployment_id).scalar_subquery().label("listed_schedules"))


@functools.cache
def _claimable(in_pool: bool) -> tuple[transitions.Guard, transitions.Returning]:
    """``_folded``'s guard and the columns it returns: ``_row``'s read as a sub-select in the
    update's ``FROM``, locking the run's pool, queue and deployment ``FOR SHARE`` (before the update
    locks the run, as ``_row`` does) where ``admission.open_unlimited`` holds on their newest
    versions (and the pool is ``:pool``), the run joined to it by its pool, queue and deployment.
    The answer's columns are the locked rows', as ``_row``'s are; the deployment's last, in
    ``deployments.COLUMNS``' order (``_answer`` reads them by position).

    Its names are short (one letter a table, ``d_<column>`` the deployment's): psycopg keeps its
    parsing of a statement's placeholders only up to 4,096 bytes, and with the tables' own names
    this one was 4,684 (parsed again at every claim: tests/integration/test_claim_in_its_update.py keeps it under)."""
    pools, queues = m.WorkPool.__table__.alias("p"), m.WorkQueue.__table__.alias("q")
    deployment, flow = m.Deployment.__table__.alias("d"), m.Flow.__table__.alias("f")
    run = m.FlowRun.__table__.alias("r")  # not locked: the update locks the run
    where = [run.c.id == bindparam(run_statements.RUN_ID), admission.open_unlimited(pools, queues, deployment)]
    if in_pool:
        where.append(pools.c.name == bindparam("pool"))
    locked = (select(pools.c.name.label("pool_name"), queues.c.name.label("queue_name"),
                     pools.c.base_job_template, flow.c.name.label("flow_name"),
                     *(deployment.c[name].label(f"d_{name}") for name in deployments.COLUMNS))
              .select_from(run)
              .join(pools, pools.c.name == run.c.work_pool_name)
              .join(queues, and_(queues.c.pool_id == pools.c.id, queues.c.name == run.c.work_queue_name))
              .join(deployment, deployment.c.id == run.c.deployment_id)
              .join(flow, flow.c.id == deployment.c.flow_id)
              .where(*where)
              .with_for_update(read=True, of=[pools, queues, deployment])
              .subquery("c"))
    runs = run_statements.RUNS
    joined = and_(runs.work_pool_name == locked.c.pool_name, runs.work_queue_name == locked.c.queue_name,
                  runs.deployment_id == locked.c.d_id)
    name = "claimable_in_pool" if in_pool else "claimable"
    columns = (locked.c.base_job_template, locked.c.flow_name, _listed(locked.c.d_id),
               *(locked.c[f"d_{column}"] for column in deployments.COLUMNS))
    return transitions.Guard(name, joined), transitions.Returning(name, columns)


class _Schedule(NamedTuple):
    """A schedule as ``schedules.to_schema`` reads one, from ``_statement``'s list (PostgreSQL)."""

    id: uuid.UUID
    deployment_id: uuid.UUID
    slug: str
    schedule: dict[str, Any]
    timezone: str
    active: bool
    parameters: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime

    @classmethod
    def of(cls, listed: list[Any]) -> _Schedule:
        """From its JSON array: ids and instants are text there (an instant at the session's zone)."""
        id_, deployment_id, slug, schedule, timezone, active, parameters, created, updated = listed
        return cls(uuid.UUID(id_), uuid.UUID(deployment_id), slug, schedule, timezone, active, parameters,
                   _instant(created), _instant(updated))


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _schedules(session: Session, run: run_statements.RunRow, row: Row[Any]) -> Sequence[Any]:
    """The deployment's schedules for the answer: from ``_row``'s list on PostgreSQL, else read
    (only when ``_row`` says there are some)."""
    listed = getattr(row, "listed_schedules", _NOT_LISTED)
    if listed is not _NOT_LISTED:
        return [_Schedule.of(one) for one in listed or ()]
    return schedules.of_deployment(session, run.deployment_id) if row.has_schedules else ()


_NOT_LISTED = object()  # ``_row``'s row has no list of the schedules (SQLite)


def is_repeat(run: run_statements.RunRow, worker_name: str) -> bool:
    """This worker's own claim asked again: it holds the run, which has not started. Its first
    answer was lost -- the server replica died between the commit and the answer, a connection
    reset -- and the worker's client sent the claim again (possibly to another replica). Refusing
    would leave the run PENDING for a live worker that does not know it holds it: nothing would ever
    start it, and the reaper only recovers the runs of silent workers. A worker never asks twice
    for a run it is handling (``workers/base.py``), so the repeat is that lost answer."""
    return (run.state_type == StateType.PENDING and run.worker_name == worker_name
            and run.infrastructure_id is None)


def _answer(session: Session, run: run_statements.RunRow, row: Row[Any]) -> schemas.Claim:
    """The worker's answer: the run as ``run`` has it, its deployment and pool's job template
    as ``_row`` read them."""
    deployment = dict(zip(deployments.COLUMNS, row[_DEPLOYMENT_AT:], strict=True))
    return schemas.Claim(
        # The one answer with secret job variables in clear: the worker needs them to start the run.
        flow_run=flow_runs.to_schema(run, reveal_secrets=True),
        deployment=deployments.schema_of(
            session, deployment, row.flow_name,
            _schedules(session, run, row), reveal_secrets=True),
        base_job_template=row.base_job_template,
    )
