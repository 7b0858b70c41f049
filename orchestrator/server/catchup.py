"""The catch-up policy, applied by every scheduler pass: after downtime, which of a deployment's
Late auto-scheduled runs still run. ALL keeps them all; NONE keeps none; LATEST keeps the newest
per schedule; ``max_late_runs`` caps what is left (newest kept). The others are CANCELLED with the
reason in their message. Manual and backfilled runs are never touched."""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import InvalidTransition, NotFound
from orchestrator.server.db import models as m
from orchestrator.server.services import schedules as svc
from orchestrator.server.services import transitions
from orchestrator.states import StateType

LATE = "Late"  # the name of a SCHEDULED run past its time (the scheduler's ``mark_late``)


def apply(sessions: sessionmaker[Session], now: dt.datetime, *, chunk: int) -> int:
    """Cancel the Late runs the policies do not want, ``chunk`` deployments per transaction;
    returns how many."""
    deployment = m.Deployment
    with sessions() as session:
        policies = {row[0]: (row[1], row[2]) for row in session.execute(
            select(deployment.id, deployment.catchup, deployment.max_late_runs).where(
                (deployment.catchup != "ALL") | deployment.max_late_runs.is_not(None)))}
    skipped = 0
    ids = sorted(policies)
    for start in range(0, len(ids), chunk):
        with sessions.begin() as session:
            skipped += _apply_chunk(session, {i: policies[i] for i in ids[start:start + chunk]}, now)
    return skipped


def _apply_chunk(
    session: Session, policies: dict[uuid.UUID, tuple[str, int | None]], now: dt.datetime
) -> int:
    run = m.FlowRun
    query = (select(run.id, run.deployment_id, run.idempotency_key, run.tags)
             .where(run.deployment_id.in_(list(policies)), run.state_type == StateType.SCHEDULED,
                    run.state_name == LATE, run.idempotency_key.startswith(svc.KEY_PREFIX))
             .order_by(run.expected_start_time.desc(), run.id))
    kept: dict[Any, int] = collections.Counter()
    doomed: list[tuple[uuid.UUID, str]] = []
    for run_id, deployment_id, key, tags in session.execute(skip_locked(session, query)):
        if svc.AUTO_TAG not in tags or svc.BACKFILL_TAG in tags:
            continue
        policy, cap = policies[deployment_id]
        slug = key.split(":", 2)[1]
        if policy == "NONE":
            doomed.append((run_id, "missed its time; the deployment's catch-up policy is NONE"))
        elif policy == "LATEST" and kept[(deployment_id, slug)]:
            doomed.append((run_id, f"a later run of schedule '{slug}' is also late; catch-up policy LATEST"))
        elif cap is not None and kept[deployment_id] >= cap:
            doomed.append((run_id, f"more than {cap} late runs (the deployment's max_late_runs)"))
        else:
            kept[(deployment_id, slug)] += 1
            kept[deployment_id] += 1
    skipped = 0
    for run_id, reason in doomed:
        try:
            transitions.transition(session, run_id, StateType.CANCELLED, only_from=[StateType.SCHEDULED],
                                   guards=[transitions.named(LATE)], message=f"Skipped: {reason}.", now=now)
            skipped += 1
        except (InvalidTransition, NotFound):
            pass  # started or gone meanwhile
    return skipped


def skip_locked(session: Session, query: Any) -> Any:
    """PostgreSQL: lock what we read and skip rows another replica holds."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query
