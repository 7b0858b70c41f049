"""Why a flow run that has not started has not started: the one explanation that
``GET /api/flow_runs/{id}/waiting_reason``, ``orch deployment run --watch`` and ``run_deployment``
show ("pool 'local' has no online worker", "waiting for a concurrency slot (pool limit 2, 2 active)",
"late by 40 s").

It reads what the dispatcher and the claim check read, with the same rules (``services/slots.py``),
so it never tells a story the system does not act on: a paused deployment, for one, is not a cause,
because pausing a deployment stops its schedules, not its runs. Every query is by primary key or an
indexed column (the pool's name, the queue's pool, the workers' pool, runs by pool and deployment);
the slot counts run only when a limit applies.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import flow_runs, slots
from orchestrator.server.services.work_pools import online_cutoff
from orchestrator.states import AWAITING_RESTART, AWAITING_RETRY, StateType, is_held
from pools.slots import Candidate

# A published run nobody claimed within this time gets a cause of its own (NOT_CLAIMED): before
# that, a worker taking it is simply in progress.
CLAIM_GRACE_SECONDS = 5.0


def explain(session: Session, run_id: uuid.UUID, *, heartbeat_seconds: float, late_after_seconds: float,
            now: dt.datetime | None = None) -> schemas.WaitingReason:
    """The causes keeping run ``run_id`` from starting, most fundamental first."""
    from orchestrator.schemas.flow_runs import WaitingCause, WaitingReason

    now = now or utcnow()
    run = flow_runs.get(session, run_id)
    state = flow_runs.to_schema(run).state
    causes: list[tuple[str, str]] = []
    late: float | None = None
    if run.state_type == StateType.PENDING:
        causes.append(("STARTING", f"claimed by worker '{run.worker_name}'; its infrastructure is starting"))
    elif run.state_type == StateType.SCHEDULED:
        late = max(0.0, (now - run.expected_start_time).total_seconds())
        causes = _scheduled_causes(session, run, now, heartbeat_seconds)
    if not causes:
        return WaitingReason(flow_run_id=run.id, state=state, late_seconds=late)
    text = "; ".join(message for _, message in causes)
    if late is not None and (late >= late_after_seconds or run.state_name == "Late"):
        text = f"late by {duration(late)}: {text}"
    return WaitingReason(flow_run_id=run.id, state=state, late_seconds=late, reason=text,
                         causes=[WaitingCause(code=c, message=msg) for c, msg in causes])


def _scheduled_causes(session: Session, run: m.FlowRun, now: dt.datetime,
                      heartbeat_seconds: float) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    due = run.expected_start_time <= now
    if not due:
        when = run.expected_start_time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        what = "retry" if run.state_name in (AWAITING_RETRY, AWAITING_RESTART) else "scheduled"
        causes.append(("AWAITING_RETRY" if what == "retry" else "SCHEDULED_LATER",
                       f"{what} for {when} (in {duration((run.expected_start_time - now).total_seconds())})"))
    if is_held(run.state_type, run.state_name):
        return causes  # held by its own flow-run process between retries: nothing else applies
    if run.deployment_id is None:
        return [*causes, ("DEPLOYMENT_DELETED", "its deployment was deleted, so no worker can start it")]
    pool_name, queue_name = run.work_pool_name or "", run.work_queue_name or ""
    pool = session.scalar(select(m.WorkPool).where(m.WorkPool.name == pool_name))
    if pool is None:
        return [*causes, ("POOL_MISSING", f"its work pool '{pool_name}' does not exist")]
    if pool.paused:
        causes.append(("POOL_PAUSED", f"pool '{pool_name}' is paused (orch work-pool resume {pool_name})"))
    queue = session.scalar(
        select(m.WorkQueue).where(m.WorkQueue.pool_id == pool.id, m.WorkQueue.name == queue_name))
    if queue is None:
        causes.append(("QUEUE_MISSING", f"work queue '{queue_name}' does not exist in pool '{pool_name}'"))
    elif queue.paused:
        causes.append(("QUEUE_PAUSED", f"queue '{queue_name}' of pool '{pool_name}' is paused "
                                       f"(orch work-queue resume {queue_name} --pool {pool_name})"))
    online = session.scalar(select(func.count()).select_from(m.Worker).where(
        m.Worker.pool_id == pool.id, m.Worker.last_heartbeat >= online_cutoff(heartbeat_seconds, now))) or 0
    if not online:
        causes.append(("NO_WORKER", f"pool '{pool_name}' has no online worker "
                                    f"(start one: orch worker start --pool {pool_name})"))
    if not due or queue is None:
        return causes
    full = _full_limits(session, run, now)
    if full:
        causes.append(("CONCURRENCY_LIMIT", f"waiting for a concurrency slot ({', '.join(full)})"))
    if causes:
        return causes
    if run.dispatched_at is None:
        return [("DISPATCHING", f"due; being handed to pool '{pool_name}'")]
    waited = (now - run.dispatched_at).total_seconds()
    if waited < CLAIM_GRACE_SECONDS:
        return [("DISPATCHING", f"handed to pool '{pool_name}'; waiting for a worker to claim it")]
    return [("NOT_CLAIMED", f"handed to pool '{pool_name}' {duration(waited)} ago and not claimed yet by its "
                            f"{online} online worker(s) (busy, or not serving queue '{queue_name}')")]


def _full_limits(session: Session, run: m.FlowRun, now: dt.datetime) -> list[str]:
    """Each concurrency limit this run would exceed if it started now, as "pool limit 2, 2 active"."""
    me = Candidate(run.id, run.work_pool_name or "", run.work_queue_name or "", run.deployment_id, 1)
    limits = slots.limits_for(session, [me])
    if not (any(v is not None for v in limits.pools.values()) or limits.queues or limits.deployments):
        return []
    taken = slots.occupied(session, limits, now, dt.timedelta(0), in_flight=False, exclude=run.id)
    full = []
    pool_limit = limits.pools.get(me.pool)
    if pool_limit is not None and taken.pools[me.pool] >= pool_limit:
        full.append(f"pool limit {pool_limit}, {taken.pools[me.pool]} active")
    queue_limit = limits.queues.get((me.pool, me.queue))
    if queue_limit is not None and taken.queues[(me.pool, me.queue)] >= queue_limit:
        full.append(f"queue limit {queue_limit}, {taken.queues[(me.pool, me.queue)]} active")
    if me.deployment_id is not None:
        deployment_limit, _strategy = limits.deployments.get(me.deployment_id, (None, "ENQUEUE"))
        if deployment_limit is not None and taken.deployments[me.deployment_id] >= deployment_limit:
            full.append(f"deployment limit {deployment_limit}, {taken.deployments[me.deployment_id]} active")
    return full


def duration(seconds: float) -> str:
    """``40 s``, ``3 min``, ``2 h``, ``3 d``: how people say a wait."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"
