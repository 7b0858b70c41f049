"""Automations, under ``/api/automations``. One owned by a deployment (``owner_resource``) follows
that deployment's ``triggers``: here it can only be enabled or disabled (anything else is a 409)."""

import uuid

from fastapi import Query, Request, Response, status

from orchestrator.schemas.automations import Automation, AutomationCreate, AutomationUpdate
from orchestrator.server.api import included, paging
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import automations

router = included.router(prefix="/automations", tags=["automations"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_automation(body: AutomationCreate, ctx: Ctx) -> Automation:
    with ctx.transaction() as session:
        return automations.to_schema(automations.create(session, body), session)


@router.get("")
def list_automations(
    ctx: Ctx,
    request: Request,
    response: Response,
    owner: str | None = Query(None, max_length=1024, description="e.g. orchestrator.deployment.<id>"),
    enabled: bool | None = None,
    name: str | None = Query(None, max_length=255),
    cursor: str | None = paging.CURSOR,
    offset: int = Query(0, ge=0, le=2**63 - 1, description=paging.OFFSET_HELP),
    limit: int = Query(200, ge=1, le=1000),
) -> list[Automation]:
    """Automations by name, filtered by owner, enabled and name; the ``Link`` header's rel="next"
    reads on."""
    with ctx.sessions() as session:
        rows, after = automations.page(session, owner=owner, enabled=enabled, name=name, cursor=cursor,
                                       offset=offset, limit=limit)
        out = [automations.to_schema(row, session) for row in rows]
    paging.link_next(request, response, after)
    return out


@router.get("/{automation_id}")
def read_automation(automation_id: uuid.UUID, ctx: Ctx) -> Automation:
    with ctx.sessions() as session:
        return automations.to_schema(automations.get(session, automation_id), session)


@router.patch("/{automation_id}")
def update_automation(automation_id: uuid.UUID, body: AutomationUpdate, ctx: Ctx) -> Automation:
    with ctx.transaction() as session:
        return automations.to_schema(automations.update(session, automation_id, body), session)


@router.post("/{automation_id}/enable")
def enable_automation(automation_id: uuid.UUID, ctx: Ctx) -> Automation:
    with ctx.transaction() as session:
        return automations.to_schema(automations.set_enabled(session, automation_id, True), session)


@router.post("/{automation_id}/disable")
def disable_automation(automation_id: uuid.UUID, ctx: Ctx) -> Automation:
    with ctx.transaction() as session:
        return automations.to_schema(automations.set_enabled(session, automation_id, False), session)


@router.delete("/{automation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_automation(automation_id: uuid.UUID, ctx: Ctx) -> None:
    with ctx.transaction() as session:
        automations.delete(session, automation_id)
