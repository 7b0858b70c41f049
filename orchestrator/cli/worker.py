"""``orch worker start | ls | check``."""

from __future__ import annotations

import typer

from orchestrator.cli import checks, worker_check
from orchestrator.cli.output import client, table
from orchestrator.cli.worker_start import start_worker

app = typer.Typer(help="Run workers.", no_args_is_help=True)
app.command("check")(worker_check.check)


@app.command("ls")
def ls(pool: str = typer.Option(..., "--pool", "-p", help="Work pool whose workers to list.")) -> None:
    """Workers of a pool: ONLINE while they heartbeat, OFFLINE after three missed heartbeats."""
    workers = client().list_workers(pool)
    table(f"Workers of {pool}", ["name", "status", "last heartbeat"],
          [[w.name, w.status, w.last_heartbeat.isoformat(timespec="seconds")] for w in workers])


@app.command("start")
def start(
    pool: str = typer.Option(..., "--pool", "-p", help="Work pool to serve."),
    type_: str = typer.Option(None, "--type", "-t", help="Worker type; creates the pool if missing."),
    queue: list[str] = typer.Option(
        [], "--queue", "-q", help="Only these work queues (default: all, also those created later)."),
    limit: int = typer.Option(10, "--limit", min=1, max=checks.MAX_RUNS_AT_ONCE,
                              help=f"Most runs at once (1 to {checks.MAX_RUNS_AT_ONCE})."),
    name: str = typer.Option(None, "--name", help="Worker name (default: type-host-pid; %h: the host's "
                             "name, as in Celery's -n); refused while an ONLINE worker of the pool has it."),
) -> None:
    """Serve a work pool: claim its due runs and start their infrastructure."""
    # Usually not reached: cli/main.py serves well-formed options without typer (cli/worker_start.py).
    start_worker(pool, type_, queue, limit, name)
