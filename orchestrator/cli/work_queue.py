"""``orch work-queue ...``."""

from __future__ import annotations

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import client, table

app = typer.Typer(help="Manage the work queues of a pool.", no_args_is_help=True)
POOL = typer.Option(..., "--pool", "-p", help="Work pool of the queue.")
NAME = typer.Argument(..., help="Name of the work queue.", show_default=False)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Name of the new queue (no / % & > <, at most 255 characters).",
                               show_default=False),
    pool: str = POOL,
    priority: int = typer.Option(1, "--priority", min=1, max=checks.INT32_MAX, help="1 is served first."),
    concurrency_limit: int = typer.Option(None, "--concurrency-limit", min=0, max=checks.INT32_MAX,
                                          help="Most runs of the queue at once (default: no limit)."),
) -> None:
    """Create a work queue in a pool; workers serving all queues pick it up at their next heartbeat."""
    from orchestrator import schemas

    queue = client().create_work_queue(
        pool, schemas.WorkQueueCreate(name=name, priority=priority, concurrency_limit=concurrency_limit))
    print(f"Created work queue '{queue.name}' in pool '{pool}'.")


@app.command("ls")
def ls(pool: str = POOL) -> None:
    """List a pool's work queues, by priority (1 first)."""
    queues = client().list_work_queues(pool)
    table(f"Work queues of {pool}", ["name", "priority", "paused", "concurrency limit"],
          [[q.name, q.priority, q.paused, q.concurrency_limit] for q in queues])


def _set_paused(name: str, pool: str, paused: bool) -> None:
    from orchestrator import schemas

    client().update_work_queue(pool, name, schemas.WorkQueueUpdate(paused=paused))


@app.command("pause")
def pause(name: str = NAME, pool: str = POOL) -> None:
    """Pause a work queue: its due runs wait until it is resumed."""
    _set_paused(name, pool, True)
    print(f"Paused work queue '{name}'.")


@app.command("resume")
def resume(name: str = NAME, pool: str = POOL) -> None:
    """Resume a paused work queue."""
    _set_paused(name, pool, False)
    print(f"Resumed work queue '{name}'.")


@app.command("delete")
def delete(name: str = NAME, pool: str = POOL) -> None:
    """Delete a work queue (not the pool's default queue)."""
    client().delete_work_queue(pool, name)
    print(f"Deleted work queue '{name}'.")
