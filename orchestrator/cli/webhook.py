"""``orch webhook ...``: incoming webhooks (``POST /api/hooks/<slug>`` becomes an event)."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli.output import client, fail, table

app = typer.Typer(help="Manage incoming webhooks: HTTP calls that become events.", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the webhook.", show_default=False),
    template: str = typer.Option(..., "--template", "-t", show_default=False,
                                 help="Jinja rendering the event as JSON (context: body, headers, query), "
                                      "or @FILE to read it from a file."),
    description: str = typer.Option("", "--description", help="What the webhook is for."),
) -> None:
    """Create a webhook; prints its URL path and its secret (shown only once)."""
    if template.startswith("@"):
        try:
            template = Path(template[1:]).read_text(encoding="utf-8")
        except OSError as error:
            fail(f"cannot read {template[1:]}: {error.strerror or error}")
    made = client().create_webhook(name, template, description)
    print(f"Created webhook '{made['name']}': POST {made['url_path']}")
    print(f"Secret (send as header X-Orch-Webhook-Secret or ?secret=; shown only now): {made['secret']}")


@app.command("ls")
def ls() -> None:
    """List webhooks."""
    table("Webhooks", ["id", "name", "path", "enabled"],
          [[w["id"], w["name"], w["url_path"], w["enabled"]] for w in client().list_webhooks()])


@app.command("delete")
def delete(ref: str = typer.Argument(..., help="Id, name or slug.", show_default=False)) -> None:
    """Delete a webhook."""
    client().delete_webhook(ref)
    print(f"Deleted webhook '{ref}'.")
