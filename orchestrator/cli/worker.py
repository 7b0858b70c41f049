"""``orch worker start | ls | check``."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import typer

from orchestrator.cli import worker_check
from orchestrator.cli.output import client, fail, table

if TYPE_CHECKING:
    from orchestrator.client import Client

app = typer.Typer(help="Run workers.", no_args_is_help=True)
app.command("check")(worker_check.check)


@app.command("ls")
def ls(pool: str = typer.Option(..., "--pool", "-p", help="Work pool whose workers to list.")) -> None:
    """Workers of a pool: ONLINE while they heartbeat, OFFLINE after three missed heartbeats."""
    workers = client().list_workers(pool)
    table(f"Workers of {pool}", ["name", "status", "last heartbeat"],
          [[w.name, w.status, w.last_heartbeat.isoformat(timespec="seconds")] for w in workers])


# How long ``orch worker start`` waits for an API that does not answer yet (a worker started
# alongside its server), and then how long a running worker rides out an API outage per request.
START_WAIT_SECONDS = 30.0


def _reach_api(api: Client) -> Client:
    """The API answers, or the user hears at once that it does not: one line, then retries for
    ``START_WAIT_SECONDS``, then the error (exit 1), as Celery says so when its broker is down."""
    from orchestrator.errors import ServerUnreachable, ServiceUnavailable

    try:
        api.health()
    except (ServerUnreachable, ServiceUnavailable) as error:
        said = error.detail if isinstance(error, ServerUnreachable) else f"the API at {api.api_url}: {error.detail}"
        print(f"{said}; retrying for up to {START_WAIT_SECONDS:.0f} s", file=sys.stderr, flush=True)
        api.retry_seconds = START_WAIT_SECONDS
        api.health()
    api.retry_seconds = START_WAIT_SECONDS
    return api


@app.command("start")
def start(
    pool: str = typer.Option(..., "--pool", "-p", help="Work pool to serve."),
    type_: str = typer.Option(None, "--type", "-t", help="Worker type; creates the pool if missing."),
    queue: list[str] = typer.Option(
        [], "--queue", "-q", help="Only these work queues (default: all, also those created later)."),
    limit: int = typer.Option(10, "--limit", min=1, help="Most runs at once."),
    name: str = typer.Option(None, "--name", help="Worker name (default: type-host-pid)."),
) -> None:
    """Serve a work pool: claim its due runs and start their infrastructure."""
    from orchestrator import schemas
    from orchestrator.client import Client
    from orchestrator.errors import Conflict, NotFound
    from orchestrator.settings import Settings
    from workers.broker import broker_url_for_worker
    from workers.celery_worker import serve
    from workers.registry import worker_class

    settings = Settings()
    for what, value in (("work pool", pool), ("worker", name)):
        if value is not None and (why := schemas.name_problem(value)) is not None:
            fail(f"invalid {what} name {value!r}: {why}")
    api = _reach_api(Client.from_settings(settings))
    # Before the pool is created or the worker shows ONLINE: refused on another broker than the server's.
    broker_url = broker_url_for_worker(api, settings)
    try:
        work_pool = api.read_work_pool(pool)
    except NotFound:
        if type_ is None:
            fail(f"work pool '{pool}' not found; create it or pass --type to create it")
        try:
            work_pool = api.create_work_pool(schemas.WorkPoolCreate(name=pool, type=type_))
        except Conflict:
            work_pool = api.read_work_pool(pool)
    if type_ is not None and type_ != work_pool.type:
        fail(f"work pool '{pool}' is of type '{work_pool.type}', not '{type_}'")
    try:
        cls = worker_class(work_pool.type)
    except KeyError as error:
        fail(str(error.args[0]))
    known = [q.name for q in api.list_work_queues(pool)]  # by priority, 1 first
    unknown = sorted(set(queue) - set(known))
    if unknown:
        fail(f"work queue(s) {', '.join(unknown)} not in pool '{pool}' (has: {', '.join(known)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = settings.api_key.get_secret_value() if settings.api_key else None
    options: dict[str, object] = {"prewarm": settings.worker_prewarm} if work_pool.type == "process" else {}
    worker = cls(api, pool=pool, name=name, limit=limit, heartbeat_seconds=settings.worker_heartbeat_seconds,
                 cancel_grace_seconds=settings.worker_cancel_grace_seconds, api_url=settings.api_url, api_key=key,
                 **options)
    queues = [name for name in known if name in queue] if queue else known  # keep the priority order
    print(f"worker {worker.name} serving pool '{pool}' ({work_pool.type}), queues {', '.join(queues)}, "
          f"limit {limit}", flush=True)
    serve(worker, broker_url=broker_url, queue_names=queues, follow_new_queues=not queue)
