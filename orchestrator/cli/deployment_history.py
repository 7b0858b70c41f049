"""``orch deployment history NAME``: every change of a deployment, oldest first."""

from __future__ import annotations

import json
from typing import Any

import typer

from orchestrator.cli.output import client, table

LONGEST_VALUE = 60  # a value longer than this (a parameter schema) is cut in the table; --json has it whole


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= LONGEST_VALUE else text[:LONGEST_VALUE - 1] + "…"


def history(
    name: str = typer.Argument(..., metavar="DEPLOYMENT", help="flow/deployment or id"),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON, values whole."),
) -> None:
    """Every change of a deployment: what changed (from -> to), when, the version after it and
    the API key that made it (a fingerprint; empty on an open server)."""
    api = client()
    deployment = api.read_deployment_ref(name)
    entries = api.read_deployment_versions(deployment.id)
    if as_json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    rows = [[e.created.isoformat(timespec="seconds"), e.action, e.version,
             "\n".join(f"{field}: {_short(change['from'])} -> {_short(change['to'])}"
                       for field, change in e.changes.items()),
             e.api_key_fingerprint] for e in entries]
    table(f"History of {deployment.full_name}", ["when", "action", "version", "changes", "key"], rows)
