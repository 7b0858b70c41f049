import uuid

from fastapi import Query, Request, status
from starlette.concurrency import run_in_threadpool

from orchestrator import schemas
from orchestrator.schemas.base import new_list
from orchestrator.server.api import included
from orchestrator.server.api.context import Ctx, worker_key
from orchestrator.server.api.notify import ClientGone, long_poll
from orchestrator.server.services import leases, work_pools

router = included.router(prefix="/work_pools", tags=["work pools"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_work_pool(body: schemas.WorkPoolCreate, ctx: Ctx) -> schemas.WorkPool:
    with ctx.transaction() as session:
        return work_pools.pool_schema(session, work_pools.create(session, body), ctx.settings.worker_heartbeat_seconds)


@router.get("")
def list_work_pools(ctx: Ctx) -> list[schemas.WorkPool]:
    with ctx.sessions() as session:
        hb = ctx.settings.worker_heartbeat_seconds
        return [work_pools.pool_schema(session, p, hb) for p in work_pools.list_(session)]


@router.get("/{name}")
def read_work_pool(name: str, ctx: Ctx) -> schemas.WorkPool:
    with ctx.sessions() as session:
        return work_pools.pool_schema(session, work_pools.get(session, name), ctx.settings.worker_heartbeat_seconds)


@router.patch("/{name}")
def update_work_pool(name: str, body: schemas.WorkPoolUpdate, ctx: Ctx) -> schemas.WorkPool:
    with ctx.transaction() as session:
        pool = work_pools.update(session, name, body)
        out = work_pools.pool_schema(session, pool, ctx.settings.worker_heartbeat_seconds)
    ctx.runs_due()  # a resumed pool's due runs go out now
    return out


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_work_pool(name: str, ctx: Ctx) -> None:
    with ctx.transaction() as session:
        work_pools.delete(session, name)


@router.post("/{name}/queues", status_code=status.HTTP_201_CREATED)
def create_work_queue(name: str, body: schemas.WorkQueueCreate, ctx: Ctx) -> schemas.WorkQueue:
    with ctx.transaction() as session:
        return work_pools.queue_schema(work_pools.create_queue(session, name, body), name)


@router.get("/{name}/queues")
def list_work_queues(name: str, ctx: Ctx) -> list[schemas.WorkQueue]:
    with ctx.sessions() as session:
        return [work_pools.queue_schema(q, name) for q in work_pools.list_queues(session, name)]


@router.get("/{name}/queues/{queue}")
def read_work_queue(name: str, queue: str, ctx: Ctx) -> schemas.WorkQueue:
    with ctx.sessions() as session:
        return work_pools.queue_schema(work_pools.get_queue(session, name, queue), name)


@router.patch("/{name}/queues/{queue}")
def update_work_queue(name: str, queue: str, body: schemas.WorkQueueUpdate, ctx: Ctx) -> schemas.WorkQueue:
    with ctx.transaction() as session:
        out = work_pools.queue_schema(work_pools.update_queue(session, name, queue, body), name)
    ctx.runs_due()
    return out


@router.delete("/{name}/queues/{queue}", status_code=status.HTTP_204_NO_CONTENT)
def delete_work_queue(name: str, queue: str, ctx: Ctx) -> None:
    with ctx.transaction() as session:
        work_pools.delete_queue(session, name, queue)


@router.post("/{name}/workers/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
async def worker_heartbeat(name: str, body: schemas.WorkerHeartbeat, ctx: Ctx) -> None:
    """The worker is alive: this renews the lease on every run it holds. A starting worker's first
    heartbeat (``starting``) is refused (409 ``worker_name_taken``) while an ONLINE worker of the
    pool has its name, and so is a beat of a process (``instance``) that no longer holds its name."""

    def beat() -> None:
        with ctx.transaction() as session:
            work_pools.heartbeat(session, name, body.name, heartbeat_seconds=ctx.settings.worker_heartbeat_seconds,
                                 starting=body.starting, instance=body.instance)

    await ctx.record_beat(beat)  # refused, or late, it is told to the reapers


@router.get("/{name}/workers/{worker_name}/cancellations")
async def wait_for_cancellations(
    name: str, worker_name: str, ctx: Ctx, request: Request, timeout: float = Query(30.0, ge=0, le=300),
    exclude: list[uuid.UUID] = Query(default_factory=new_list), instance: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Runs of this worker waiting to be cancelled (CANCELLING), minus ``exclude`` (those it is
    already stopping). Answers as soon as there is one, or after ``timeout`` with an empty list:
    the worker's cancellation channel, pushed, not polled.

    The open request is also the worker's connection lease: opening it renews the worker's
    heartbeat, and a worker that drops it without asking again is judged gone within seconds
    (``services/leases.py``). ``instance``: the worker process's id, as in its heartbeats (a
    process that no longer holds the name is refused, 409 ``worker_name_taken``)."""
    skip = set(exclude)

    def read() -> list[uuid.UUID]:
        with ctx.sessions() as session:
            return [i for i in work_pools.cancellations(session, name, worker_name) if i not in skip]

    def renew() -> None:
        with ctx.transaction() as session:
            work_pools.heartbeat(session, name, worker_name, heartbeat_seconds=ctx.settings.worker_heartbeat_seconds,
                                 instance=instance)

    await ctx.record_beat(renew)
    try:
        return await long_poll(ctx.notifier, worker_key(name, worker_name), read, bool, timeout, request)
    except ClientGone:
        await run_in_threadpool(ctx.client_gone, leases.WorkerHolder(name, worker_name, instance))
        return []  # nobody reads it


@router.get("/{name}/workers")
def list_workers(name: str, ctx: Ctx) -> list[schemas.Worker]:
    with ctx.sessions() as session:
        return work_pools.list_workers(session, name, ctx.settings.worker_heartbeat_seconds)
