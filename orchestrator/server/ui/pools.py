"""Work-pool pages: each pool's status, workers and their last heartbeat, queues, concurrency and
base job template. Pausing, limits and the template are changed through the API from the page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from orchestrator.errors import NotFound
from orchestrator.server.services import work_pools
from orchestrator.server.ui import queries
from orchestrator.server.ui.render import page

router = APIRouter(include_in_schema=False)


@router.get("/pools")
def list_page(request: Request) -> HTMLResponse:
    ctx = request.app.state.ctx
    heartbeat = ctx.settings.worker_heartbeat_seconds
    with ctx.sessions() as session:
        pools = [work_pools.pool_schema(session, p, heartbeat) for p in work_pools.list_(session)]
        workers = queries.workers_by_pool(session, heartbeat)
        queue_counts = {p.name: len(work_pools.list_queues(session, p.name)) for p in pools}
    return page(request, "pools.html", nav="pools", pools=pools, workers=workers, queue_counts=queue_counts)


@router.get("/pools/{name}")
def detail_page(request: Request, name: str) -> HTMLResponse:
    ctx = request.app.state.ctx
    heartbeat = ctx.settings.worker_heartbeat_seconds
    with ctx.sessions() as session:
        try:
            pool = work_pools.pool_schema(session, work_pools.get(session, name), heartbeat)
        except NotFound as error:
            return page(request, "not_found.html", status_code=404, what=str(error))
        queues = [work_pools.queue_schema(q, name) for q in work_pools.list_queues(session, name)]
        workers = work_pools.list_workers(session, name, heartbeat)
    return page(request, "pool.html", nav="pools", pool=pool, queues=queues, workers=workers)
