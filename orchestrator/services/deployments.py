"""Deployments: upsert on (flow, name), lookups, updates."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.db import models as m
from orchestrator.db.types import utcnow
from orchestrator.errors import NotFound
from orchestrator.services.parameters import validate_parameters


def upsert(session: Session, request: schemas.DeploymentCreate) -> tuple[m.Deployment, bool]:
    """Create the deployment, or update the one with the same flow and name. Returns (row, created)."""
    _require_pool(session, request.work_pool_name)
    _check_defaults(request.parameter_openapi_schema, request.parameters, request.enforce_parameter_schema)
    flow = _upsert_flow(session, request.flow_name)
    fields = request.model_dump(exclude={"flow_name"})
    existing = session.scalar(select(m.Deployment).where(m.Deployment.flow_id == flow.id, m.Deployment.name == request.name))
    if existing is not None:
        for key, value in fields.items():
            setattr(existing, key, value)
        existing.updated = utcnow()
        session.flush()
        return existing, False
    deployment = m.Deployment(id=uuid.uuid4(), flow_id=flow.id, **fields)
    try:
        with session.begin_nested():
            session.add(deployment)
            session.flush()
    except IntegrityError:  # a concurrent upsert created it first: update that one
        return upsert(session, request)
    return deployment, True


def _check_defaults(schema: dict[str, Any], parameters: dict[str, Any], enforce: bool) -> None:
    """Deployment defaults must be valid values, but may leave required parameters to each run."""
    if not enforce or not schema:
        return
    validate_parameters({**schema, "required": []}, parameters)


def _upsert_flow(session: Session, name: str) -> m.Flow:
    flow = session.scalar(select(m.Flow).where(m.Flow.name == name))
    if flow is not None:
        return flow
    flow = m.Flow(id=uuid.uuid4(), name=name)
    try:
        with session.begin_nested():
            session.add(flow)
            session.flush()
    except IntegrityError:
        return session.scalars(select(m.Flow).where(m.Flow.name == name)).one()
    return flow


def _require_pool(session: Session, pool_name: str) -> None:
    if session.scalar(select(m.WorkPool.id).where(m.WorkPool.name == pool_name)) is None:
        raise NotFound(f"work pool '{pool_name}' not found; create it with `orch work-pool create {pool_name} --type process`")


def get(session: Session, deployment_id: uuid.UUID) -> m.Deployment:
    deployment = session.get(m.Deployment, deployment_id)
    if deployment is None:
        raise NotFound(f"deployment {deployment_id} not found")
    return deployment


def get_by_name(session: Session, flow_name: str, name: str) -> m.Deployment:
    deployment = session.scalar(
        select(m.Deployment).join(m.Flow).where(m.Flow.name == flow_name, m.Deployment.name == name)
    )
    if deployment is None:
        raise NotFound(f"deployment '{flow_name}/{name}' not found")
    return deployment


def list_(session: Session, *, flow_name: str | None = None, pool: str | None = None, tag: str | None = None,
          offset: int = 0, limit: int = 200) -> list[m.Deployment]:
    statement = select(m.Deployment).join(m.Flow)
    if flow_name is not None:
        statement = statement.where(m.Flow.name == flow_name)
    if pool is not None:
        statement = statement.where(m.Deployment.work_pool_name == pool)
    rows = list(session.scalars(statement.order_by(m.Flow.name, m.Deployment.name).offset(offset).limit(limit)))
    return [d for d in rows if tag is None or tag in d.tags]


def update(session: Session, deployment_id: uuid.UUID, request: schemas.DeploymentUpdate) -> m.Deployment:
    deployment = get(session, deployment_id)
    changes = request.model_dump(exclude_unset=True)
    if "work_pool_name" in changes:
        _require_pool(session, changes["work_pool_name"])
    for key, value in changes.items():
        setattr(deployment, key, value)
    _check_defaults(deployment.parameter_openapi_schema, deployment.parameters, deployment.enforce_parameter_schema)
    deployment.updated = utcnow()
    session.flush()
    return deployment


def delete(session: Session, deployment_id: uuid.UUID) -> None:
    session.delete(get(session, deployment_id))
    session.flush()


def to_schema(session: Session, deployment: m.Deployment) -> schemas.Deployment:
    flow_name = session.scalar(select(m.Flow.name).where(m.Flow.id == deployment.flow_id))
    data = {c: getattr(deployment, c) for c in schemas.Deployment.model_fields if c != "flow_name"}
    return schemas.Deployment.model_validate({**data, "flow_name": flow_name})
