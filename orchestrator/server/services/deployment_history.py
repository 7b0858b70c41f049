"""Deployment history: every change of a deployment keeps a row saying which fields changed, from
what to what, when, and which API key made it (``DeploymentVersion``), for audit.

The callers (deployments and schedules) take a ``snapshot`` before they change anything and call
``record`` after; a change that changes nothing (an identical re-deploy) leaves no row."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.masking import mask_values
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import emitted, events, keyset, masked

# Bookkeeping columns, not something a user changed.
_UNTRACKED = {"id", "flow_id", "created", "updated"}


def snapshot(deployment: m.Deployment) -> dict[str, Any]:
    """What a user can change of a deployment, as JSON: its columns and its schedules."""
    columns = [c.key for c in m.Deployment.__table__.columns if c.key not in _UNTRACKED]
    data: dict[str, Any] = {key: getattr(deployment, key) for key in columns}
    data["schedules"] = [{"slug": s.slug, **s.schedule, "timezone": s.timezone, "active": s.active,
                          "parameters": s.parameters} for s in sorted(deployment.schedules, key=lambda s: s.slug)]
    return to_jsonable_python(data)  # type: ignore[no-any-return]


def record(session: Session, deployment: m.Deployment, before: dict[str, Any] | None, *,
           api_key_fingerprint: str | None) -> m.DeploymentVersion | None:
    """Add the history row of one change (``before`` None: the deployment was just created)."""
    session.flush()
    session.expire(deployment, ["schedules"])  # changed through other objects: read them again
    after = snapshot(deployment)
    if before is None:
        changes = {key: {"from": None, "to": value} for key, value in after.items() if value not in (None, [], {})}
        action = "created"
    else:
        changes = {key: {"from": before.get(key), "to": value} for key, value in after.items()
                   if before.get(key) != value}
        if not changes:
            return None
        action = _action(changes)
    _mask_secrets(session, deployment, changes)
    _emit(session, deployment, before is None, changes)
    row = m.DeploymentVersion(deployment_id=deployment.id, action=action, version=deployment.version, changes=changes,
                              api_key_fingerprint=api_key_fingerprint, created=utcnow())
    session.add(row)
    session.flush()
    return row


def _mask_secrets(session: Session, deployment: m.Deployment, changes: dict[str, Any]) -> None:
    """History rows and events never hold a secret job variable: a change of one shows as
    ``********`` -> ``********`` (that it changed is kept, not what to)."""
    change = changes.get("job_variables")
    if change is None:
        return
    schema = masked.pool_variables(session, deployment.work_pool_name)
    changes["job_variables"] = {side: mask_values(schema, value) if isinstance(value, dict) else value
                                for side, value in change.items()}


def _emit(session: Session, deployment: m.Deployment, created: bool, changes: dict[str, Any]) -> None:
    """The deployment's own events (its schedules' are emitted where schedules change)."""
    flow_name = session.scalar(select(m.Flow.name).where(m.Flow.id == deployment.flow_id))
    if created:
        events.record(session, [emitted.deployment_event(deployment, "created", flow_name=flow_name)])
        return
    pause, rest = emitted.split_pause({k: v for k, v in changes.items() if k != "schedules"})
    events.record(session, [
        *([emitted.deployment_event(deployment, "updated", flow_name=flow_name, changes=rest)] if rest else []),
        *([emitted.deployment_event(deployment, pause, flow_name=flow_name)] if pause else [])])


def _action(changes: dict[str, Any]) -> str:
    if set(changes) == {"paused"}:
        return "paused" if changes["paused"]["to"] else "resumed"
    if set(changes) == {"schedules"}:
        return "schedules"
    return "updated"


def list_(session: Session, deployment_id: uuid.UUID, *, offset: int = 0,
          limit: int = 200) -> list[m.DeploymentVersion]:
    """Oldest first."""
    return page(session, deployment_id, offset=offset, limit=limit)[0]


OLDEST_FIRST = keyset.Order((m.DeploymentVersion.id,))  # the (deployment_id, id) index


def page(session: Session, deployment_id: uuid.UUID, *, cursor: str | None = None, offset: int = 0,
         limit: int = 200) -> tuple[list[m.DeploymentVersion], str | None]:
    """The deployment's changes, oldest first, after ``cursor``; and the next cursor."""
    statement = select(m.DeploymentVersion).where(m.DeploymentVersion.deployment_id == deployment_id)
    return keyset.page_or_offset(session, statement, OLDEST_FIRST, limit, cursor=cursor, offset=offset)
