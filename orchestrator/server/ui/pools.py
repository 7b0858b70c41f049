"""Work-pool pages: each pool's status, workers and their last heartbeat, queues, concurrency and
base job template, and a preview of the job a deployment of the pool would get. Pausing, limits
and the template are changed through the API from the page.

Both pages are live (``static/live.js``): a pool, queue or worker event (pause, resume, a worker
online or offline, ready / not ready) re-reads their live regions, and so does every heartbeat
period, so "last heartbeat ... ago" stays true without a reload."""

from fastapi import Request
from fastapi.responses import HTMLResponse

from orchestrator.errors import NotFound
from orchestrator.server.api import included
from orchestrator.server.services import deployments, work_pools
from orchestrator.server.ui import queries
from orchestrator.server.ui.render import page

router = included.router(include_in_schema=False)
LISTED = 1000  # deployments offered in the job preview
LIVE_EVENTS = ["orchestrator.work-pool.*", "orchestrator.work-queue.*", "orchestrator.worker.*"]


def _live(heartbeat_seconds: float) -> dict[str, object]:
    return {"stream": {"event": LIVE_EVENTS}, "every": int(heartbeat_seconds * 1000)}


@router.get("/pools")
def list_page(request: Request) -> HTMLResponse:
    ctx = request.app.state.ctx
    heartbeat = ctx.settings.worker_heartbeat_seconds
    with ctx.sessions() as session:
        pools = [work_pools.pool_schema(session, p, heartbeat) for p in work_pools.list_(session)]
        workers = queries.workers_by_pool(session, heartbeat)
        queue_counts = {p.name: len(work_pools.list_queues(session, p.name)) for p in pools}
    return page(request, "pools.html", nav="pools", pools=pools, workers=workers, queue_counts=queue_counts,
                live=_live(heartbeat))


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
        in_pool = [deployments.to_schema(session, d) for d in deployments.list_(session, pool=name, limit=LISTED)]
    return page(request, "pool.html", nav="pools", pool=pool, queues=queues, workers=workers, deployments=in_pool,
                live=_live(heartbeat))
