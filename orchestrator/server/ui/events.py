"""The events page: a feed, newest first, filtered by event name, resource, related resource and
time; older pages by the API's own ``next_page`` key, new events added live by the page's script."""

import datetime as dt
from typing import Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from orchestrator.errors import InvalidInput
from orchestrator.schemas.event_queries import EventFilter
from orchestrator.server.api import included
from orchestrator.server.services import event_pages
from orchestrator.server.ui.render import page

router = included.router(include_in_schema=False)
PAGE_SIZE = 50
RUN_PREFIX = "orchestrator.flow-run."


def _time(text: str) -> dt.datetime | None:
    # From a datetime-local field, read as UTC like every time the UI shows; the API checks the rest.
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.replace(",", " ").split() if name.strip()]


@router.get("/events")
def feed_page(
    request: Request,
    event: str = Query("", max_length=2000, description="Event-name globs, separated by spaces or commas."),
    resource: str = Query("", max_length=1025),
    related: str = Query("", max_length=1025),
    since: str = Query("", max_length=64),
    until: str = Query("", max_length=64),
    token: str = Query("", alias="page", max_length=200),
) -> HTMLResponse:
    query = {"event": event, "resource": resource, "related": related, "since": since, "until": until}
    stream: dict[str, Any] = {"event": _names(event), "resource": resource.strip(), "related": related.strip()}
    problem = None
    found: Any = None
    try:
        data: dict[str, Any] = {"event": {"name": stream["event"]},
                                "resource": {"id": [stream["resource"]] if stream["resource"] else []},
                                "occurred": {"since": _time(since) if since else None,
                                             "until": _time(until) if until else None}}
        if stream["related"]:
            data["related"] = {"id": [stream["related"]]}
        where = EventFilter.model_validate(data)
        if where.occurred.since is not None:
            stream["since"] = where.occurred.since.isoformat()
        with request.app.state.ctx.sessions() as session:
            found = event_pages.read_page(session, where, PAGE_SIZE, token or None)
    except ValidationError as error:
        problem = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    except (ValueError, InvalidInput) as error:
        problem = str(error)
    # New events join the first page live; an older page or a window that has ended stays as it is.
    live = not token and not until and problem is None
    return page(request, "events.html", nav="events", query=query, found=found, problem=problem,
                stream=stream if live else None, run_prefix=RUN_PREFIX)
