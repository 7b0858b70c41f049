"""The automations page: each automation's trigger in one line, its actions, enabled, owner; enable,
disable, delete and create go through ``/api/automations`` from the page. ``POST /ui/yaml`` turns
the YAML a person pasted into JSON for the page to send (it changes nothing)."""

import datetime as dt
import json
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse

from orchestrator.errors import NotFound
from orchestrator.schemas.automations import Automation
from orchestrator.schemas.triggers import CompoundTrigger, EventTrigger, SequenceTrigger, Trigger
from orchestrator.server.api import included
from orchestrator.server.services import automations, deployments
from orchestrator.server.ui.render import page

router = included.router(include_in_schema=False)
yaml_router = included.router(include_in_schema=False)
LISTED = 1000
MAX_YAML = 1_000_000
DEPLOYMENT_OWNER = "orchestrator.deployment."


def _window(within: dt.timedelta | None) -> str:
    seconds = within.total_seconds() if within else 0
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def trigger_summary(trigger: Trigger) -> str:
    """One line for people: ``3 × orchestrator.flow-run.Failed within 10 min where ...``."""
    if isinstance(trigger, CompoundTrigger):
        return f"{trigger.require} of {len(trigger.triggers)} triggers" + (
            f" within {_window(trigger.within)}" if trigger.within else "")
    if isinstance(trigger, SequenceTrigger):
        return f"{len(trigger.triggers)} triggers in order" + (
            f" within {_window(trigger.within)}" if trigger.within else "")
    assert isinstance(trigger, EventTrigger)
    names = ", ".join(trigger.expect) or "any event"
    if trigger.posture == "Proactive":
        text = f"fewer than {trigger.threshold} × {names} in {_window(trigger.within)}"
    elif trigger.within:
        text = f"{trigger.threshold} × {names} within {_window(trigger.within)}"
    else:
        text = f"{trigger.threshold} × {names}" if trigger.threshold > 1 else f"each {names}"
    if trigger.after:
        text = f"after {', '.join(trigger.after)}: {text}"
    if trigger.match:
        text += " where " + ", ".join(f"{k} = {json.dumps(v) if isinstance(v, list) else v}"
                                      for k, v in trigger.match.items())
    if trigger.for_each:
        text += f" (each {', '.join(trigger.for_each)})"
    return text


def action_names(automation: Automation) -> list[str]:
    return [a.type for a in (*automation.actions, *automation.actions_on_trigger, *automation.actions_on_resolve)]


def owner_link(owner: str | None, names: dict[str, str]) -> tuple[str, str] | None:
    """(label, address) of an owning deployment."""
    if not owner:
        return None
    if owner.startswith(DEPLOYMENT_OWNER):
        ident = owner[len(DEPLOYMENT_OWNER):]
        return names.get(ident, ident), f"/deployments/{ident}"
    return owner, ""


@router.get("/automations")
def list_page(request: Request) -> HTMLResponse:
    with request.app.state.ctx.sessions() as session:
        items = [automations.to_schema(row, session) for row in automations.list_(session, limit=LISTED)]
        names = {}
        for ident in {a.owner_resource[len(DEPLOYMENT_OWNER):] for a in items
                      if a.owner_resource and a.owner_resource.startswith(DEPLOYMENT_OWNER)}:
            try:
                names[ident] = deployments.to_schema(session, deployments.get(session, uuid.UUID(ident))).full_name
            except (NotFound, ValueError):  # a deployment gone, or an owner that is no id: shown as it is
                continue
    owners = {a.id: owner_link(a.owner_resource, names) for a in items}
    return page(request, "automations.html", nav="automations", items=items, owners=owners,
                summary=trigger_summary, action_names=action_names)


@yaml_router.post("/ui/yaml")
async def yaml_to_json(request: Request) -> JSONResponse:
    """The pasted YAML (or JSON) as JSON, or a 422 saying where it does not parse."""
    import yaml  # here: PyYAML is 18 modules a server's start need not load for a page's tool

    text = (await request.body())[:MAX_YAML + 1].decode(errors="replace")
    if len(text) > MAX_YAML:
        return _refused(f"at most {MAX_YAML} characters")
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        return _refused(f"not valid YAML{where}: {problem}")
    try:
        return JSONResponse(json.loads(json.dumps(data, default=str)))
    except ValueError as error:
        return _refused(f"not JSON-like data: {error}")


def _refused(message: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}, status_code=422)
