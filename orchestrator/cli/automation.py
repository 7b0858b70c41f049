"""``orch automation ...``: list, inspect, create from a file, enable, disable, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from orchestrator.cli.output import client, fail, print_json, table

app = typer.Typer(help="Manage automations: triggers and the actions they run.", no_args_is_help=True)
REF = typer.Argument(..., help="Id or name of the automation.", show_default=False)


def _read_definitions(path: Path) -> list[dict[str, Any]]:
    """One automation or a list of them, in YAML or JSON (``automations:`` at the top also works)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror or error}")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {str(error).splitlines()[0]}")
    if isinstance(data, dict) and isinstance(data.get("automations"), list):
        data = data["automations"]
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) for item in items):
        fail(f"{path} must hold an automation (a mapping) or a list of them")
    return items


@app.command("ls")
def ls(
    owner: str = typer.Option(None, "--owner", help="Only those owned by this resource (orchestrator.deployment.<id>)."),
    enabled: bool = typer.Option(None, "--enabled/--disabled", help="Only enabled (or disabled) ones.",
                                 show_default=False),
) -> None:
    """List automations by name."""
    found = client().list_automations(owner=owner, enabled=enabled)
    table("Automations", ["id", "name", "enabled", "trigger", "actions", "owner"],
          [[a.id, a.name, a.enabled, a.trigger.type, ", ".join(x.type for x in a.actions) or "-",
            a.owner_resource or ""] for a in found])


@app.command("inspect")
def inspect(ref: str = REF) -> None:
    """Print an automation as JSON."""
    print_json(client().read_automation_ref(ref))


@app.command("create")
def create(
    file: Path = typer.Option(..., "--file", "-f", help="YAML or JSON file: one automation or a list.",
                              show_default=False),
) -> None:
    """Create the automations a file defines (each is checked by the server; the first error stops)."""
    api = client()
    for definition in _read_definitions(file):
        automation = api.create_automation(definition)
        print(f"Created automation '{automation.name}' ({automation.id}).")


def _set_enabled(ref: str, enabled: bool) -> None:
    api = client()
    automation = api.set_automation_enabled(api.read_automation_ref(ref).id, enabled)
    print(f"{'Enabled' if enabled else 'Disabled'} automation '{automation.name}'.")


@app.command("enable")
def enable(ref: str = REF) -> None:
    """Enable an automation (an owned one too)."""
    _set_enabled(ref, True)


@app.command("disable")
def disable(ref: str = REF) -> None:
    """Disable an automation: it stops firing until enabled (a redeploy sets an owned one's again)."""
    _set_enabled(ref, False)


@app.command("delete")
def delete(ref: str = REF) -> None:
    """Delete an automation (one owned by a deployment goes with its trigger, not here)."""
    api = client()
    automation = api.read_automation_ref(ref)
    api.delete_automation(automation.id)
    print(f"Deleted automation '{automation.name}'.")
