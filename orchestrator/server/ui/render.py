"""Templates and the filters they use: times, JSON, states, and Markdown rendered safely."""

import datetime as dt
import functools
import json
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from orchestrator.server.db.types import utcnow
from orchestrator.states import FINAL_STATES

HERE = Path(__file__).parent
STATIC = HERE / "static"

# CommonMark without raw HTML: any tag in a description is shown as text, and markdown-it's link
# check drops javascript:, vbscript:, file: and data: URLs (except images).

# The navigation, in order; a page marks its own entry with ``nav=<key>``. Entries with no path
# are announced but not built yet (their issues have not landed).
NAV: list[tuple[str, str, str | None]] = [
    ("dashboard", "Dashboard", "/"),
    ("deployments", "Deployments", "/deployments"),
    ("runs", "Flow runs", "/runs"),
    ("task-runs", "Task runs", "/task-runs"),
    ("pools", "Work pools", "/pools"),
    ("events", "Events", "/events"),
    ("automations", "Automations", "/automations"),
    ("api", "API docs", "/api/docs"),
]


# The pages run only this server's script: a description that slipped past the escaping could
# still not run one. Inline style attributes draw the dashboard's bars.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def markdown(text: str | None) -> Any:
    from markupsafe import Markup

    return Markup(_markdown().render(text or ""))


@functools.cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False})  # raw HTML in a description is shown, not run


def when(value: dt.datetime | None) -> str:
    """``2024-05-01 12:00:05 UTC``: the server's clock is UTC, and so is every stored time."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: dt.datetime | None) -> str:
    """``3 min ago`` / ``in 2 h``: how far from now, coarse."""
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    seconds = (utcnow() - value).total_seconds()
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if span >= size:
            amount = f"{int(span // size)} {unit}"
            break
    else:
        amount = f"{int(span)} s"
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def state_class(state_type: str) -> str:
    return f"state state-{state_type.lower()}"


def is_final(state_type: str) -> bool:
    return state_type in FINAL_STATES


@functools.cache
def templates() -> Any:
    """Built at the first page, not at import: a server that only answers the API never loads Jinja2."""
    from starlette.templating import Jinja2Templates

    built = Jinja2Templates(directory=str(HERE / "templates"))
    built.env.filters.update(markdown=markdown, when=when, ago=ago, pretty_json=pretty_json, state_class=state_class)
    built.env.globals.update(NAV=NAV, is_final=is_final)
    return built


def id_in_path(text: str) -> uuid.UUID | None:
    """The id a page's address names, None when the text is no id: the page then answers Not found,
    as for an unknown id, rather than the API's JSON 422 (someone typed or cut the address)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/<name>``; every page gets the request and whether keys are in use."""
    keys = request.app.state.ctx.gate.maybe_enabled_fast()
    response = templates().TemplateResponse(request, name, {"protected": bool(keys), **context}, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response
