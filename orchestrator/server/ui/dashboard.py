"""The dashboard: runs by state over the last hours, Late runs, pools and workers not ready."""

from fastapi import Request
from fastapi.responses import HTMLResponse

from orchestrator.server.api import included
from orchestrator.server.services import flow_runs, work_pools
from orchestrator.server.ui import queries
from orchestrator.server.ui.render import page

router = included.router(include_in_schema=False)
# What the dashboard shows changes with these: its counts and Late runs, its pools and workers.
LIVE_EVENTS = ["orchestrator.flow-run.*", "orchestrator.work-pool.*", "orchestrator.work-queue.*",
               "orchestrator.worker.*"]


@router.get("/")
def dashboard(request: Request) -> HTMLResponse:
    ctx = request.app.state.ctx
    heartbeat = ctx.settings.worker_heartbeat_seconds
    with ctx.sessions() as session:
        counts = queries.runs_by_state(session)
        late = [flow_runs.to_schema(r) for r in queries.late_runs(session)]
        pools = [work_pools.pool_schema(session, p, heartbeat) for p in work_pools.list_(session)]
        workers = queries.workers_by_pool(session, heartbeat)
    attention = [p for p in pools if p.status != "READY" or p.paused]
    offline = {name: w["offline"] for name, w in workers.items() if w["offline"]}
    return page(request, "dashboard.html", nav="dashboard", counts=counts, biggest=max([1, *counts.values()]),
                hours=queries.DASHBOARD_HOURS, late=late, attention=attention, offline=offline, pools=pools,
                live={"stream": {"event": LIVE_EVENTS}})
