"""May this run start now? The one place that decides, for the three moments a run's path asks:

- at creation (``publish_at_once``): the create-run API publishes a run itself, right after its
  commit, only when nothing could hold it back (due now; pool, queue and deployment open and
  without a concurrency limit); anything else is left to the dispatcher;
- the dispatcher's pass (``plan_due``): which due runs to publish, which wait for a slot of their
  deployment, which are cancelled by its collision strategy (the rules: ``pools/slots.py``);
- the claim (``check_open``, then ``check_slots``): the authoritative check, since publishing
  is only a plan (``services/claims.py``).

And the one writer of ``dispatched_at`` ("published, not claimed yet"; the dispatcher re-publishes
a run whose mark is older than ``redispatch_seconds``): ``mark_published`` / ``unmark_published``.
A run's creation writes its first value (``new_runs.run_values``) and a return to SCHEDULED clears
it (``transitions.reschedule``): both are the run's lifecycle, not a publish.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.orm import Session

from orchestrator.errors import NotClaimableNow, SlotUnavailable
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import slots
from orchestrator.states import StateType
from pools.slots import Candidate, Plan, plan


def publish_at_once(*, due: bool, pool_paused: bool, queue_paused: bool | None, pool_limit: int | None,
                    queue_limit: int | None, deployment_limit: int | None) -> bool:
    """Whether a run just created may be published by its creator without a plan: due, and
    nothing a plan would weigh (a pause or any concurrency limit) applies to it."""
    return (due and not pool_paused and queue_paused is False and pool_limit is None and queue_limit is None
            and deployment_limit is None)


def plan_due(session: Session, now: dt.datetime, redispatch: dt.timedelta, batch: int) -> Plan:
    """The dispatcher's pass: due runs, unpublished (or published longer than ``redispatch``
    ago), in open pools and queues, planned against every limit and the slots taken."""
    candidates = slots.due_candidates(session, now, redispatch, batch)
    if not candidates:
        return Plan()
    limits = slots.limits_for(session, candidates)
    return plan(candidates, limits, slots.occupied(session, limits, now, redispatch))


def check_open(*, pool_paused: bool, queue_paused: bool, pool_name: str, queue_name: str) -> None:
    """The claim's first check: raise ``NotClaimableNow`` when the run's pool or queue is paused."""
    if pool_paused:
        raise NotClaimableNow(f"work pool '{pool_name}' is paused")
    if queue_paused:
        raise NotClaimableNow(f"work queue '{queue_name}' of pool '{pool_name}' is paused")


def check_slots(session: Session, run: m.FlowRun) -> None:
    """The claim's authoritative limit check (dispatchers only plan): raise ``SlotUnavailable``
    when starting ``run`` would exceed a concurrency limit. Claims of one pool are serialized by a
    write on the pool's row first, so two claims never both take the last slot."""
    session.execute(update(m.WorkPool).where(m.WorkPool.name == run.work_pool_name)
                    .values(updated=m.WorkPool.updated))
    me = Candidate(run.id, run.work_pool_name or "", run.work_queue_name or "", run.deployment_id, 1)
    limits = slots.limits_for(session, [me])
    if not (any(v is not None for v in limits.pools.values()) or limits.queues or limits.deployments):
        return
    taken = slots.occupied(session, limits, utcnow(), dt.timedelta(0), in_flight=False, exclude=run.id)
    result = plan([me], limits, taken)
    if not result.publish:
        raise SlotUnavailable(f"flow run {run.id} must wait: a concurrency limit of its "
                              f"{'deployment' if result.wait or result.cancel else 'pool or queue'} is reached")


def mark_published(session: Session, run_ids: Sequence[uuid.UUID], now: dt.datetime) -> list[tuple[uuid.UUID, str, str]]:
    """Mark runs still SCHEDULED as published at ``now``; returns (id, pool, queue) of each."""
    if not run_ids:
        return []
    rows = session.execute(
        update(m.FlowRun)
        .where(m.FlowRun.id.in_(list(run_ids)), m.FlowRun.state_type == StateType.SCHEDULED)
        .values(dispatched_at=now)
        .returning(m.FlowRun.id, m.FlowRun.work_pool_name, m.FlowRun.work_queue_name)
    ).all()
    return [(r[0], r[1] or "", r[2] or "") for r in rows]


def unmark_published(session: Session, run_ids: Sequence[uuid.UUID]) -> None:
    """The runs were not published after all (the broker failed) or a claim refused them: the
    dispatcher's next pass plans them again."""
    if run_ids:
        session.execute(update(m.FlowRun).where(m.FlowRun.id.in_(list(run_ids))).values(dispatched_at=None)
                        .execution_options(synchronize_session=False))
