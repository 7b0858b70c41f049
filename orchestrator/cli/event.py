"""``orch event ls | stream | emit``: read events by pages, follow them live, send one."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import typer

from orchestrator.cli.output import client, fail, print_json, table

app = typer.Typer(help="List, follow and emit events.", no_args_is_help=True)

EVENT = typer.Option([], "--event", metavar="GLOB", help="Event names; '*' is a wildcard (repeatable: any).")
RESOURCE = typer.Option(None, "--resource", metavar="ID", help="The resource's id ('*' is a wildcard).")
RELATED = typer.Option(None, "--related", metavar="ID", help="A related resource's id ('*' is a wildcard).")
LABEL = typer.Option([], "--label", metavar="K=V", help="A label of the resource ('!' negates; repeatable).")


def _time(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} expects an ISO 8601 time like 2026-01-31T09:00:00+00:00, got {text!r}")
    return (when if when.tzinfo else when.astimezone()).isoformat()  # naive = local time


def _zoned_time(text: str, option: str) -> str:
    """An instant given with its zone: an event's time is not guessed from this machine's."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{option} expects an ISO 8601 time with a zone like 2026-01-31T09:00:00+00:00, got {text!r}")
    if when.tzinfo is None:
        fail(f"{option} needs a zone (Z or an offset like +02:00), got {text!r}")
    return when.isoformat()


def _labels(pairs: list[str]) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--label expects key=value, got {pair!r}")
        labels.setdefault(key, []).append(value)
    return labels


@app.command("ls")
def ls(
    event: list[str] = EVENT, resource: str = RESOURCE, related: str = RELATED, label: list[str] = LABEL,
    since: str = typer.Option(None, "--since", metavar="TIME", help="Only events that occurred at or after."),
    until: str = typer.Option(None, "--until", metavar="TIME", help="Only events that occurred at or before."),
    limit: int = typer.Option(20, "--limit", metavar="N", min=1, max=1000, help="How many events to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON."),
) -> None:
    """The newest events first."""
    where: dict[str, Any] = {"event": {"name": event}, "resource": {"id": [resource] if resource else [],
                                                                    "labels": _labels(label)},
                             "occurred": {"since": _time(since, "--since"), "until": _time(until, "--until")}}
    if related:
        where["related"] = {"id": [related]}
    page = client().read_events(where, limit=limit)
    if as_json:
        print_json([e.model_dump(mode="json") for e in page.events])
        return
    table(f"Events ({len(page.events)}{', more' if page.next_page else ''})",
          ["occurred", "event", "resource", "name", "id"],
          [[e.occurred.isoformat(timespec="milliseconds"), e.event, e.resource.get("orchestrator.resource.id"),
            e.resource.get("orchestrator.resource.name", ""), e.id] for e in page.events])


@app.command("stream")
def stream(event: list[str] = EVENT, resource: str = RESOURCE, related: str = RELATED, label: list[str] = LABEL,
           as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Follow events as they are stored, until Ctrl-C (a dropped connection resumes where it was)."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    for _cursor, e in client().stream_events(event=event, resource=resource, related=related, labels=label):
        if as_json:
            print(e.model_dump_json(), flush=True)
            continue
        name = e.resource.get("orchestrator.resource.name")
        console.print(f"[dim]{e.occurred.isoformat(timespec='milliseconds')}[/] [bold]{escape(e.event)}[/] "
                      f"{escape(e.resource.get('orchestrator.resource.id', ''))}"
                      + (f" [cyan]{escape(name)}[/]" if name else ""))
        sys.stdout.flush()


@app.command("emit")
def emit(
    name: str = typer.Argument(..., help="The event's name, e.g. my.app.uploaded."),
    resource_id: str = typer.Option(..., "--resource-id", metavar="ID", help="The resource's id, e.g. my.bucket.1."),
    resource: list[str] = typer.Option([], "--resource", metavar="K=V", help="Another label of the resource."),
    related: str = typer.Option(None, "--related", metavar="JSON",
                                help="Related resources: a JSON list of label objects, each with "
                                     "orchestrator.resource.id and orchestrator.resource.role."),
    payload: str = typer.Option(None, "--payload", metavar="JSON", help="The payload, a JSON object."),
    occurred: str = typer.Option(None, "--occurred", metavar="TIME",
                                 help="When it happened: ISO 8601 with a zone, e.g. 2026-01-31T09:00:00+00:00 "
                                      "(at most an hour ahead); default now."),
) -> None:
    """Send one event."""
    labels: dict[str, str] = {}
    for pair in resource:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--resource expects key=value, got {pair!r}")
        labels[key] = value
    body: dict[str, Any] = {"event": name, "resource": {**labels, "orchestrator.resource.id": resource_id},
                            "related": _json(related, "--related", list, []),
                            "payload": _json(payload, "--payload", dict, {})}
    if occurred is not None:
        body["occurred"] = _zoned_time(occurred, "--occurred")
    from pydantic import ValidationError

    from orchestrator.cli.output import one_line
    from orchestrator.schemas.events import EventIn

    try:
        event = EventIn.model_validate(body)  # a mistake is named here, as the API's 422 would
    except ValidationError as error:
        fail(f"invalid event: {one_line(error.errors(include_url=False))}")
    recorded = client().emit_events([event.model_dump(mode="json")])
    print(f"Event {event.id} {'recorded' if recorded else 'was already recorded'}.")


def _json(text: str | None, option: str, kind: type, default: Any) -> Any:
    if text is None:
        return default
    try:
        value = json.loads(text)
    except ValueError as error:
        fail(f"{option} expects JSON: {error}")
    if kind is list and isinstance(value, dict):
        value = [value]  # one related resource
    if not isinstance(value, kind):
        fail(f"{option} expects a JSON {'list' if kind is list else 'object'}")
    return value
