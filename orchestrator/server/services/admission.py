"""May this run start now? The one place that decides, for the three moments a run's path asks:

- at creation (``publish_at_once``): the create-run API publishes a run itself, right after its
  commit, only when nothing could hold it back (due now; pool, queue and deployment open and
  without a concurrency limit); anything else is left to the dispatcher;
- the dispatcher's pass (``plan_due``): which due runs to publish, which wait for a slot of their
  deployment, which are cancelled by its collision strategy (the rules: ``pools/slots.py``);
- the claim (``check_open``, then ``check_slots``; ``open_unlimited`` when its update checks
  them): the authoritative check, since publishing is only a plan (``services/claims.py``).

The publish mark itself (``dispatched_at``) is a lifecycle column: ``run_columns.mark_published``
and ``unmark_published`` write it, beside the heartbeat and the infrastructure; ``transitions``
writes the state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.orm import Session

from orchestrator.errors import NotClaimableNow, SlotUnavailable
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import slots
from orchestrator.server.services.run_statements import RunRow
from pools.slots import Candidate, Plan, plan

# The classes (first key) of the advisory locks claims under a limit take: one per pool (second key:
# the hash of its name), and the next one per deployment with a limit (the hash of its id), always
# in that order; the schema's migration lock is the one-key 4300 (``db/session.py``).
CLAIM_LOCK_CLASS = 4301


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


def open_unlimited(pool: Any, queue: Any, deployment: Any) -> ColumnElement[bool]:
    """``check_open`` and ``check_slots`` at once, as a condition on the rows of a run's pool,
    queue and deployment, for a claim that checks them in its guarded update (``claims.py``,
    PostgreSQL): both open and none of the three with a concurrency limit, when ``check_slots``
    has nothing to count. Read ``FOR SHARE`` as ``check_slots`` says, PostgreSQL checks it again
    on each row's newest version once locked. When it does not hold, the claim checks as before."""
    return and_(~pool.c.paused, ~queue.c.paused, pool.c.concurrency_limit.is_(None),
                queue.c.concurrency_limit.is_(None), deployment.c.concurrency_limit.is_(None))


def check_slots(session: Session, run: RunRow, limits_seen: Sequence[int | None]) -> None:
    """The claim's authoritative limit check (dispatchers only plan): raise ``SlotUnavailable``
    when starting ``run`` would exceed a concurrency limit. ``limits_seen``: the limits of the
    run's pool, queue and deployment as the caller read them, ``FOR SHARE`` on PostgreSQL
    (``claims._rows``).

    Those shared locks are the point: claims do not wait for each other, but a change of a limit
    (an ``UPDATE`` of one of those rows) waits for every claim in flight, so a claim that sees a
    new limit counts every run claimed before it. Only claims under a limit are serialized (on an
    advisory lock of the pool, never by upgrading the shared row lock, which two claims would
    deadlock on), and under a deployment's limit also on one of the deployment (its runs can be in
    several pools), so two of them never both take the last slot. Profiled before: the write on the
    pool's row every claim made was 44 % of a claim's samples in a burst of 8 claims, queued on
    that row's lock. On SQLite the write on the pool's row stays: it takes the database's one
    write lock, which serializes claims (and changes of limits) anyway."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        if all(limit is None for limit in limits_seen):
            return
        session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_CLASS, func.hashtext(run.work_pool_name or ""))))
        if limits_seen[2] is not None:  # a deployment's runs can be in several pools (its pool changed)
            session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_CLASS + 1, func.hashtext(str(run.deployment_id)))))
    else:
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
