"""A worker's claim of a due run: SCHEDULED -> PENDING for exactly one claimant, after the
admission check (``services/admission.py``), answered with everything the worker needs to start
it -- the run, its deployment and its pool's job template -- so nobody fetches them again."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from orchestrator import schemas
from orchestrator.errors import Conflict, NotClaimableNow
from orchestrator.server.db import models as m
from orchestrator.server.services import (
    admission,
    deployments,
    flow_runs,
    run_columns,
    run_statements,
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
    run, pool_row, queue, deployment, flow_name = _rows(session, run_id)
    if is_repeat(run, worker_name):
        return Claimed(run, _answer(session, run, pool_row, deployment, flow_name))
    try:
        admission.check_open(pool_paused=pool_row.paused, queue_paused=queue.paused, pool_name=pool_row.name,
                             queue_name=queue.name)
        if pool is not None and pool != pool_row.name:
            raise Conflict(f"flow run {run_id} belongs to pool '{pool_row.name}', not '{pool}'")
        admission.check_slots(session, run, (pool_row.concurrency_limit, queue.concurrency_limit,
                                             deployment.concurrency_limit))
    except NotClaimableNow as error:  # nothing written yet but locks on the rows of its limits
        run_columns.unmark_published(session, [run_id])
        return Refused(error)
    claimed = transitions.claim(session, run_id, worker_name, now=now)
    return Claimed(claimed, _answer(session, claimed, pool_row, deployment, flow_name))


def _rows(session: Session, run_id: uuid.UUID
          ) -> tuple[run_statements.RunRow, m.WorkPool, m.WorkQueue, m.Deployment, str | None]:
    """The run, its pool, queue and deployment (and its flow's name, for the answer) in one
    statement, the pool, queue and deployment read ``FOR SHARE`` on PostgreSQL: they hold its
    concurrency limits, which may not change until this claim has committed
    (``admission.check_slots``). The run itself is locked by the claim's update. When one is
    missing, each is read on its own and raises the error its own read would (``NotFound``, or
    ``Conflict`` for a run without a deployment).

    The same statement says whether the deployment has schedules: the answer lists them, and
    a deployment without any (most that workers run) then needs no read of them of its own
    (one statement of the claim's seven; ~1 ms of the claim on the run timeline).

    The run is read as the table's columns, by their names (the row is a ``RunRow`` with a few
    more), not as a ``FlowRun`` entity: its claim is a Core statement too (``run_statements.run_row``)."""
    row = session.execute(_rows_statement(), {run_statements.RUN_ID: run_id}).one_or_none()
    if row is not None:
        if not row.has_schedules and "schedules" not in row.Deployment.__dict__:
            set_committed_value(row.Deployment, "schedules", [])  # none: as the lazy read of them would find
        return row, row.WorkPool, row.WorkQueue, row.Deployment, row.flow_name
    run = run_statements.read(session, run_id)
    if run.deployment_id is None:
        raise Conflict(f"flow run {run_id} has no deployment to run")
    pool_row = work_pools.get(session, run.work_pool_name or "")
    queue = work_pools.get_queue(session, pool_row.name, run.work_queue_name or "")
    return run, pool_row, queue, deployments.get(session, run.deployment_id), None


@functools.cache
def _rows_statement() -> Select[Any]:
    """``_rows``' statement, built once (``services/run_statements.py`` says why)."""
    has_schedules = exists().where(m.DeploymentSchedule.deployment_id == m.Deployment.id).correlate(m.Deployment)
    runs = run_statements.RUNS
    return (select(*runs, m.WorkPool, m.WorkQueue, m.Deployment, m.Flow.name.label("flow_name"),
                   has_schedules.label("has_schedules"))
            .select_from(m.FlowRun.__table__)
            .join(m.WorkPool, m.WorkPool.name == runs.work_pool_name)
            .join(m.WorkQueue, and_(m.WorkQueue.pool_id == m.WorkPool.id, m.WorkQueue.name == runs.work_queue_name))
            .join(m.Deployment, m.Deployment.id == runs.deployment_id)
            .join(m.Flow, m.Flow.id == m.Deployment.flow_id)
            .where(runs.id == bindparam(run_statements.RUN_ID))
            .with_for_update(read=True, of=[m.WorkPool, m.WorkQueue, m.Deployment])
            .execution_options(**{PLAN: GENERIC}))  # planned once per connection (``orchestrator/sql.py``)


def is_repeat(run: run_statements.RunRow, worker_name: str) -> bool:
    """This worker's own claim asked again: it holds the run, which has not started. Its first
    answer was lost -- the server replica died between the commit and the answer, a connection
    reset -- and the worker's client sent the claim again (possibly to another replica). Refusing
    would leave the run PENDING for a live worker that does not know it holds it: nothing would ever
    start it, and the reaper only recovers the runs of silent workers. A worker never asks twice
    for a run it is handling (``workers/base.py``), so the repeat is that lost answer."""
    return (run.state_type == StateType.PENDING and run.worker_name == worker_name
            and run.infrastructure_id is None)


def _answer(session: Session, run: run_statements.RunRow, pool_row: m.WorkPool, deployment: m.Deployment,
            flow_name: str | None) -> schemas.Claim:
    return schemas.Claim(
        # The one answer with secret job variables in clear: the worker needs them to start the run.
        flow_run=flow_runs.to_schema(run, reveal_secrets=True),
        deployment=deployments.to_schema(session, deployment, reveal_secrets=True, flow_name=flow_name),
        base_job_template=pool_row.base_job_template,
    )

