"""Flows: a flow's name for the runs that carry only its id (``orch flow-run ls``, the UI)."""

import uuid

from fastapi import Query

from orchestrator import schemas
from orchestrator.schemas.base import new_list
from orchestrator.server.api import included
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import flows

router = included.router(prefix="/flows", tags=["flows"])
MAX_IDS = 1000  # a page of runs at most


@router.get("")
def list_flows(ctx: Ctx, ids: list[uuid.UUID] = Query(default_factory=new_list, alias="id", max_length=MAX_IDS,
                                                       description="Flow ids; unknown ones are left out.")
               ) -> list[schemas.Flow]:
    """The flows of the ids given (``?id=...&id=...``), by name: one request names every run of a page."""
    with ctx.sessions() as session:
        return [schemas.Flow.model_validate(row) for row in flows.by_ids(session, ids)]


@router.get("/{flow_id}")
def read_flow(flow_id: uuid.UUID, ctx: Ctx) -> schemas.Flow:
    with ctx.sessions() as session:
        return schemas.Flow.model_validate(flows.get(session, flow_id))
