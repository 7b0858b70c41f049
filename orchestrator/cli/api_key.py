"""``orch api-key ...``: create (the key is printed once), ls, revoke. docs/security.md."""

from __future__ import annotations

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import client, table

app = typer.Typer(help="Manage API keys and their scopes (admin).", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the key (unique, kept after revocation).", show_default=False),
    scope: list[str] = typer.Option(..., "--scope", "-s", help="admin, deploy, run, worker or read (repeatable).",
                                    show_default=False),
    pool: list[str] = typer.Option(None, "--pool", "-p", help="With --scope worker: a pool it may serve "
                                   "(repeatable; unset: every pool).", show_default=False),
    expires_in: str = typer.Option(None, "--expires-in", help="e.g. 30d, 12h, 3600 (seconds), at most 36500d; "
                                   "unset: never.", show_default=False, callback=checks.api_key_lifetime),
) -> None:
    """Create a key and print it: it is shown this once (the server keeps only its hash)."""
    from orchestrator.schemas.api_keys import ApiKeyCreate

    request = ApiKeyCreate.model_validate({"name": name, "scopes": scope, "pools": pool or None,
                                           "expires_in": expires_in})
    created = client().create_api_key(request)
    print(f"Created API key '{created.name}' ({', '.join(created.scopes)}"
          f"{'; pools ' + ', '.join(created.pools) if created.pools else ''}"
          f"{'; expires ' + created.expires.isoformat() if created.expires else ''}). Keep it now, it is not "
          "shown again:")
    print(created.secret)


@app.command("ls")
def ls(
    runs: bool = typer.Option(False, "--runs", help="Also the flow runs' own keys."),
) -> None:
    """List keys: name, prefix, scopes, pools, created, expires, revoked, last used."""
    keys = client().list_api_keys(include_run_keys=runs)
    table("API keys", ["name", "prefix", "scopes", "pools", "created", "expires", "revoked", "last used"],
          [[k.name, k.prefix, ", ".join(k.scopes) or "(its run)", ", ".join(k.pools or []) or "", k.created,
            k.expires, k.revoked, k.last_used] for k in keys])


@app.command("revoke")
def revoke(ref: str = typer.Argument(..., help="Name, id or prefix of the key.", show_default=False)) -> None:
    """Revoke a key at once: its next request is refused, on every server replica."""
    key = client().revoke_api_key(ref)
    print(f"Revoked API key '{key.name}' ({key.prefix}).")
