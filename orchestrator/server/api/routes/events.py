"""Events, under ``/api/events``: written in batches by clients (``emit_event``, workers, the CLI),
read by pages (``GET /api/events``, ``POST /api/events/filter``) and live (``GET /api/events/stream``,
Server-Sent Events)."""

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, Header, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from orchestrator.schemas.base import new_list
from orchestrator.schemas.event_queries import (
    DEFAULT_PAGE,
    MAX_FILTER_ITEMS,
    MAX_PAGE,
    EventFilter,
    EventPage,
    EventQuery,
)
from orchestrator.schemas.events import MAX_BATCH, EventIn
from orchestrator.server.api import included
from orchestrator.server.api.context import AppContext, Ctx
from orchestrator.server.hub import EVENTS
from orchestrator.server.services import event_pages, event_stream

router = included.router(prefix="/events", tags=["events"])

HEARTBEAT_SECONDS = 15.0  # an SSE comment this often keeps proxies and clients from timing out


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def write_events(ctx: Ctx, body: list[EventIn] = Body(max_length=MAX_BATCH)) -> dict[str, int]:
    """Record a batch of events; one whose id is already stored is dropped (``recorded`` counts the
    new ones). A batch is stored whole or not at all, and committed before the answer (concurrent
    requests share a commit: ``api/ingest.py``)."""
    recorded = await ctx.event_writer.write(body)
    ctx.event_counts.received(len(body), recorded)
    return {"recorded": recorded}


class _QueryFilter:
    """The filter of ``GET /api/events`` and the stream, from query parameters."""

    def __init__(
        self,
        event: list[str] = Query(default_factory=new_list, max_length=MAX_FILTER_ITEMS,
                                 description="Event names; '*' is a wildcard (repeatable: any of them)."),
        resource: str | None = Query(None, description="The primary resource's id (a glob)."),
        related: str | None = Query(None, description="A related resource's id (a glob)."),
        label: list[str] = Query(default_factory=new_list, max_length=MAX_FILTER_ITEMS,
                                 description="key=value of the primary resource ('*' globs, '!' negates; "
                                             "repeated keys: any of the values)."),
        since: dt.datetime | None = Query(None),
        until: dt.datetime | None = Query(None),
        order: Literal["ASC", "DESC"] = Query("DESC", description="Of a page (the stream is in storage order)."),
    ) -> None:
        labels: dict[str, list[str]] = {}
        for item in label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise RequestValidationError([{"type": "value_error", "loc": ("query", "label"), "input": item,
                                               "msg": "a label filter is key=value"}])
            labels.setdefault(key, []).append(value)
        data: dict[str, Any] = {"occurred": {"since": since, "until": until}, "event": {"name": event},
                                "resource": {"id": [resource] if resource else [], "labels": labels}, "order": order}
        if related:
            data["related"] = {"id": [related]}
        self.filter = _validated(EventFilter, data, "query")


def _validated(model: type[EventFilter | EventQuery], data: Any, where: str) -> Any:
    """A filter built in the route: its validation errors are the same 422 as FastAPI's own."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": (where, *e["loc"])} for e in error.errors(include_url=False)]) \
            from None


@router.get("")
def read_events(ctx: Ctx, query: Annotated[_QueryFilter, Depends()], limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
                page: str | None = Query(None, max_length=200,
                                         description="The next_page token of the page before.")) -> EventPage:
    """A page of events, newest first unless ``order=ASC``; ``next_page`` reads on."""
    with ctx.sessions() as session:
        return event_pages.read_page(session, query.filter, limit, page)


@router.post("/filter")
def filter_events(ctx: Ctx, body: EventQuery) -> EventPage:
    """A page of events matching a full filter (``schemas.event_queries.EventFilter``); send the same
    filter with ``page`` = the ``next_page`` of the page before to read on."""
    with ctx.sessions() as session:
        return event_pages.read_page(session, body.filter, body.limit, body.page)


@router.get("/stream")
async def stream_events(
    request: Request, ctx: Ctx, query: Annotated[_QueryFilter, Depends()],
    after: str | None = Query(None, max_length=event_stream.MAX_CURSOR_CHARS,
                              description="Resume after this event id (as the Last-Event-ID header does)."),
    last_event_id: str | None = Header(None, max_length=event_stream.MAX_CURSOR_CHARS),
) -> StreamingResponse:
    """Server-Sent Events: every event stored from now on (or after the cursor ``Last-Event-ID`` /
    ``after``) that matches the filter, each as ``id: <cursor>``, ``event: event``, ``data: <json>``;
    a comment every 15 s keeps the connection alive. See ``services/event_stream.py``."""
    resume = last_event_id or after
    if resume:
        cursor = event_stream.Cursor.parse(resume)
    else:
        cursor = await run_in_threadpool(_start_cursor, ctx)
    reader = event_stream.StreamReader(ctx.sessions, query.filter, cursor)
    return StreamingResponse(_sse(ctx, reader), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _start_cursor(ctx: AppContext) -> event_stream.Cursor:
    with ctx.sessions() as session:
        return event_stream.start_cursor(session)


async def _sse(ctx: AppContext, reader: event_stream.StreamReader) -> AsyncIterator[str]:
    """The stream's body. Woken by the hub (events committed on any replica), and at the latest
    when an open gap expires, a heartbeat is due, or the safety re-read comes round. Starlette
    cancels it when the client goes away; leaving the ``with`` unsubscribes."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    with ctx.hub.subscribe(EVENTS, lambda _key: loop.call_soon_threadsafe(changed.set)):
        yield f"retry: 1000\n: open {reader.cursor.text()}\n\n"  # subscribed: nothing committed from now is missed
        beat_at = loop.time() + HEARTBEAT_SECONDS
        while True:
            changed.clear()  # before reading: an event committed during the read wakes the next wait
            for event, cursor in await run_in_threadpool(reader.read):
                yield f"id: {cursor}\nevent: event\ndata: {event.model_dump_json()}\n\n"
            if reader.more:
                continue
            now = loop.time()
            wait = min(beat_at, now + ctx.notifier.reread_seconds)
            if reader.recheck_at is not None:  # the same monotonic clock as the loop's
                wait = min(wait, reader.recheck_at + 0.01)
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, wait - now))
            except TimeoutError:
                pass
            if loop.time() >= beat_at:
                yield ": keep-alive\n\n"
                beat_at = loop.time() + HEARTBEAT_SECONDS
