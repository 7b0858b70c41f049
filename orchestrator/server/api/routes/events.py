"""Events, under ``/api/events``: written in batches by clients (``emit_event``, workers, the CLI)."""

from __future__ import annotations

from fastapi import APIRouter, Body, status

from orchestrator.schemas.events import MAX_BATCH, EventIn
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import events

router = APIRouter(prefix="/events", tags=["events"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def write_events(ctx: Ctx, body: list[EventIn] = Body(max_length=MAX_BATCH)) -> dict[str, int]:
    """Record a batch of events; one whose id is already stored is dropped (``recorded`` counts the
    new ones). A batch is stored whole or not at all."""
    with ctx.transaction() as session:
        return {"recorded": events.record(session, body)}
