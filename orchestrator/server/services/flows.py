"""Flows: the row each flow name gets, made by the first deployment or directly called run of it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.errors import NotFound
from orchestrator.server.db import models as m


def upsert(session: Session, name: str) -> m.Flow:
    """The flow named ``name``, created if new (a concurrent creator's row wins). No commit."""
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


def get(session: Session, flow_id: uuid.UUID) -> m.Flow:
    flow = session.get(m.Flow, flow_id)
    if flow is None:
        raise NotFound(f"flow {flow_id} not found")
    return flow


def by_ids(session: Session, ids: Sequence[uuid.UUID]) -> list[m.Flow]:
    """The flows of ``ids`` (unknown ids left out), by name: what a page of runs names."""
    return list(session.scalars(select(m.Flow).where(m.Flow.id.in_(ids)).order_by(m.Flow.name))) if ids else []
