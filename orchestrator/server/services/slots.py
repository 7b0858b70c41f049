"""Database side of concurrency slots (the rules themselves are in ``pools/slots.py``): the due
candidates, the limits that apply to them, and the slots already occupied."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.server.services.transitions import SCHEDULED_FREE, SCHEDULED_HELD
from orchestrator.states import StateType
from pools.slots import Candidate, Limits, Occupied

# States that hold a slot; a run held by its process between retries (AwaitingRetry) holds one too.
ACTIVE = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)
AWAITING_SLOT = "AwaitingConcurrencySlot"


def _occupying(now: dt.datetime, redispatch: dt.timedelta, *, in_flight: bool):  # type: ignore[no-untyped-def]
    held = or_(m.FlowRun.state_type.in_(ACTIVE), SCHEDULED_HELD)
    if not in_flight:
        return held
    # Published but not claimed yet: its slot is promised.
    promised = and_(SCHEDULED_FREE, m.FlowRun.dispatched_at >= now - redispatch)
    return or_(held, promised)


def due_candidates(session: Session, now: dt.datetime, redispatch: dt.timedelta, batch: int) -> list[Candidate]:
    """Due SCHEDULED runs that nobody holds and that were not published recently, in open pools
    and queues, in priority order (queue priority, then oldest first)."""
    statement = (
        select(m.FlowRun.id, m.FlowRun.work_pool_name, m.FlowRun.work_queue_name, m.FlowRun.deployment_id,
               m.WorkQueue.priority)
        .join(m.WorkPool, m.WorkPool.name == m.FlowRun.work_pool_name)
        .join(m.WorkQueue, and_(m.WorkQueue.pool_id == m.WorkPool.id, m.WorkQueue.name == m.FlowRun.work_queue_name))
        .where(
            SCHEDULED_FREE,
            m.FlowRun.expected_start_time <= now,
            or_(m.FlowRun.dispatched_at.is_(None), m.FlowRun.dispatched_at < now - redispatch),
            m.WorkPool.paused.is_(False),
            m.WorkQueue.paused.is_(False),
        )
        .order_by(m.WorkQueue.priority, m.FlowRun.expected_start_time)
        .limit(batch)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Two dispatchers (server replicas) split the due runs instead of both taking them.
        statement = statement.with_for_update(skip_locked=True, of=m.FlowRun)
    return [Candidate(r[0], r[1] or "", r[2] or "", r[3], r[4]) for r in session.execute(statement)]


def limits_for(session: Session, candidates: Sequence[Candidate]) -> Limits:
    pools = {c.pool for c in candidates}
    deployments = {c.deployment_id for c in candidates if c.deployment_id is not None}
    pool_limits = dict(session.execute(
        select(m.WorkPool.name, m.WorkPool.concurrency_limit).where(m.WorkPool.name.in_(pools))).all())
    queue_limits = {(p, q): limit for p, q, limit in session.execute(
        select(m.WorkPool.name, m.WorkQueue.name, m.WorkQueue.concurrency_limit)
        .join(m.WorkPool, m.WorkPool.id == m.WorkQueue.pool_id)
        .where(m.WorkPool.name.in_(pools), m.WorkQueue.concurrency_limit.is_not(None)))}
    deployment_limits = {d: (limit, strategy) for d, limit, strategy in session.execute(
        select(m.Deployment.id, m.Deployment.concurrency_limit, m.Deployment.concurrency_collision_strategy)
        .where(m.Deployment.id.in_(deployments), m.Deployment.concurrency_limit.is_not(None)))}
    return Limits(pool_limits, queue_limits, deployment_limits)


def occupied(session: Session, limits: Limits, now: dt.datetime, redispatch: dt.timedelta, *,
             in_flight: bool = True, exclude: uuid.UUID | None = None) -> Occupied:
    """Slots in use, counted only where a limit applies (no limits: no counting queries)."""
    result = Occupied()
    where = [_occupying(now, redispatch, in_flight=in_flight)]
    if exclude is not None:
        where.append(m.FlowRun.id != exclude)
    limited_pools = [p for p, limit in limits.pools.items() if limit is not None]
    limited_queue_pools = {p for (p, _q) in limits.queues}
    if limited_pools or limited_queue_pools:
        rows = session.execute(
            select(m.FlowRun.work_pool_name, m.FlowRun.work_queue_name, func.count())
            .where(m.FlowRun.work_pool_name.in_(set(limited_pools) | limited_queue_pools), *where)
            .group_by(m.FlowRun.work_pool_name, m.FlowRun.work_queue_name))
        for pool, queue, count in rows:
            result.pools[pool or ""] += count
            result.queues[(pool or "", queue or "")] += count
    if limits.deployments:
        for deployment_id, count in session.execute(
            select(m.FlowRun.deployment_id, func.count())
            .where(m.FlowRun.deployment_id.in_(list(limits.deployments)), *where)
            .group_by(m.FlowRun.deployment_id)
        ):
            result.deployments[deployment_id] += count
    return result

