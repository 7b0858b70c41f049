"""``orch work-queue ...``."""

from __future__ import annotations

import typer

from orchestrator.cli.output import client, table

app = typer.Typer(help="Manage the work queues of a pool.", no_args_is_help=True)
POOL = typer.Option(..., "--pool", "-p", help="Work pool of the queue.")


@app.command("create")
def create(
    name: str,
    pool: str = POOL,
    priority: int = typer.Option(1, "--priority", min=1, help="1 is served first."),
    concurrency_limit: int = typer.Option(None, "--concurrency-limit", min=0),
) -> None:
    from orchestrator import schemas

    queue = client().create_work_queue(
        pool, schemas.WorkQueueCreate(name=name, priority=priority, concurrency_limit=concurrency_limit))
    print(f"Created work queue '{queue.name}' in pool '{pool}'.")


@app.command("ls")
def ls(pool: str = POOL) -> None:
    queues = client().list_work_queues(pool)
    table(f"Work queues of {pool}", ["name", "priority", "paused", "concurrency limit"],
          [[q.name, q.priority, q.paused, q.concurrency_limit] for q in queues])


def _set_paused(name: str, pool: str, paused: bool) -> None:
    from orchestrator import schemas

    client().update_work_queue(pool, name, schemas.WorkQueueUpdate(paused=paused))


@app.command("pause")
def pause(name: str, pool: str = POOL) -> None:
    _set_paused(name, pool, True)
    print(f"Paused work queue '{name}'.")


@app.command("resume")
def resume(name: str, pool: str = POOL) -> None:
    _set_paused(name, pool, False)
    print(f"Resumed work queue '{name}'.")


@app.command("delete")
def delete(name: str, pool: str = POOL) -> None:
    client().delete_work_queue(pool, name)
    print(f"Deleted work queue '{name}'.")
