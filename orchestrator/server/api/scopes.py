"""The one table of what each route needs (docs/security.md), and ``authorize``, the dependency of
every API router that enforces it.

A route is named by its endpoint's name (unique among the API's routes; ``tests/integration/
test_scopes.py`` walks every route of the app against this table, with a key of each scope). A route
missing from the table is refused to everyone but an open server: forgetting a route fails closed.

``own_run``: a flow run's own key may call the route for its own run -- the path's ``run_id`` is
its run, or ``deployment_id`` its run's deployment; a route with neither (``POST /api/events``) is
open to it as it is.
"""

import uuid
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from orchestrator.errors import Forbidden, NotFound, OrchestratorError
from orchestrator.schemas.scopes import Scope
from orchestrator.server.api.gate import OPEN as OPEN_SERVER
from orchestrator.server.db import models as m
from orchestrator.server.services.api_keys import Principal


@dataclass(frozen=True)
class Need:
    scope: Scope | None  # None: open to anyone
    own_run: bool = False  # a run's own key may call it for its run
    opened_by: str | None = None  # a boolean setting that opens the route to anyone


OPEN = Need(None)
READ, OWN_READ = Need(Scope.READ), Need(Scope.READ, own_run=True)
DEPLOY, RUN, ADMIN = Need(Scope.DEPLOY), Need(Scope.RUN), Need(Scope.ADMIN)
WORKER, OWN_WORKER = Need(Scope.WORKER), Need(Scope.WORKER, own_run=True)
OWN_RUN = Need(Scope.RUN, own_run=True)

ROUTES: dict[str, Need] = {
    # open: liveness, and the broker's address (it shows the password only to a valid key itself)
    "health": OPEN,
    "read_broker": OPEN,
    "metrics": Need(Scope.READ, opened_by="metrics_open"),
    # deployments, their schedules and history
    "upsert_deployment": DEPLOY,
    "list_deployments": READ,
    "read_deployment_by_name": READ,
    "read_deployment": OWN_READ,
    "update_deployment": DEPLOY,
    "delete_deployment": DEPLOY,
    "pause_deployment": DEPLOY,
    "resume_deployment": DEPLOY,
    "list_schedules": READ,
    "create_schedule": DEPLOY,
    "read_schedule": READ,
    "update_schedule": DEPLOY,
    "delete_schedule": DEPLOY,
    "preview_schedule": READ,  # stores nothing: the next times a schedule would give
    "backfill": DEPLOY,
    "read_deployment_versions": READ,
    "preview_job": READ,  # stores nothing; secret values masked
    # incoming webhooks: managed like automations; a hook itself is open, its own secret is its key
    "create_webhook": DEPLOY,
    "list_webhooks": READ,
    "delete_webhook": DEPLOY,
    "receive_hook": OPEN,
    # automations
    "create_automation": DEPLOY,
    "list_automations": READ,
    "read_automation": READ,
    "update_automation": DEPLOY,
    "enable_automation": DEPLOY,
    "disable_automation": DEPLOY,
    "delete_automation": DEPLOY,
    # runs
    "create_flow_run": RUN,
    "create_direct_flow_run": RUN,  # a program calling a flow directly: as much as running a deployment
    "create_subflow_run": OWN_RUN,  # a flow called inside a run: that run's own key too
    "cancel_flow_run": RUN,
    "list_flow_runs": READ,
    "read_flow_run": OWN_READ,
    "read_flow_run_relatives": OWN_READ,
    "read_flow": READ,
    "list_flows": READ,
    "read_waiting_reason": OWN_READ,
    "wait_for_flow_run": OWN_READ,
    "read_flow_run_states": OWN_READ,
    "read_logs": OWN_READ,
    "read_task_runs": OWN_READ,
    "claim_flow_run": WORKER,
    "report_infrastructure": WORKER,
    "set_flow_run_state": OWN_WORKER,
    "flow_run_heartbeat": OWN_WORKER,
    "write_logs": OWN_WORKER,
    "write_task_runs": OWN_WORKER,
    # task runs of tasks called outside any flow: a program running its own code, as a run would
    "write_task_runs_outside_flows": RUN,
    "task_run_holder_heartbeat": RUN,
    "release_task_run_holder": RUN,
    "list_task_runs_outside_flows": READ,
    # events (an event can trigger an automation that runs a deployment: as much as ``run``)
    "write_events": Need(Scope.RUN, own_run=True),
    "read_events": READ,
    "filter_events": READ,
    "stream_events": READ,
    # work pools, queues, workers
    "create_work_pool": ADMIN,
    "list_work_pools": READ,
    "read_work_pool": READ,
    "update_work_pool": ADMIN,
    "delete_work_pool": ADMIN,
    "create_work_queue": ADMIN,
    "list_work_queues": READ,
    "read_work_queue": READ,
    "update_work_queue": ADMIN,
    "delete_work_queue": ADMIN,
    "list_workers": READ,
    "worker_heartbeat": WORKER,
    "wait_for_cancellations": WORKER,
    # API keys
    "create_api_key": ADMIN,
    "list_api_keys": ADMIN,
    "read_api_key": ADMIN,
    "revoke_api_key": ADMIN,
}


def need_of(request: Request) -> Need | None:
    route = request.scope.get("route")
    return ROUTES.get(getattr(route, "name", ""))


async def authorize(request: Request) -> None:
    """The dependency of every API router: 401 without a valid key, 403 naming what is missing."""
    await authorize_need(request, need_of(request))


async def authorize_need(request: Request, need: Need | None) -> None:
    """``authorize`` for a route whose ``Need`` the caller knows (``api/fast_routes.py``, which
    serves its routes before FastAPI has matched them)."""
    ctx = request.app.state.ctx
    if need is not None and (need.scope is None or (need.opened_by and getattr(ctx.settings, need.opened_by))):
        return
    principal: Principal = await ctx.gate.authenticate(request)
    if principal is OPEN_SERVER:
        return
    if need is None:
        raise OrchestratorError(f"route {getattr(request.scope.get('route'), 'name', '?')} has no scope declared")
    assert need.scope is not None
    params = request.path_params
    if principal.run_id is not None:
        if need.own_run and _is_own(principal, params):
            return
        raise Forbidden(f"a flow run's key may only use its own run ({principal.run_id}); "
                        f"this route needs the '{need.scope}' scope")
    if need.scope not in principal.scopes:
        raise Forbidden(f"this route needs the '{need.scope}' scope; the key has "
                        f"{', '.join(sorted(principal.scopes)) or 'none'}")
    if need.scope is Scope.WORKER and principal.pools is not None and Scope.ADMIN not in principal.scopes:
        pool = params.get("name") or await run_in_threadpool(_pool_of_run, ctx, params.get("run_id"))
        if pool not in principal.pools:
            raise Forbidden(f"this worker key serves the pools {', '.join(sorted(principal.pools))}, "
                            f"not '{pool}'")


def _is_own(principal: Principal, params: dict[str, str]) -> bool:
    if "run_id" in params:
        return _same(params["run_id"], principal.run_id)
    if "deployment_id" in params:
        return _same(params["deployment_id"], principal.deployment_id)
    return True


def _same(text: str, wanted: uuid.UUID | None) -> bool:
    try:
        return wanted is not None and uuid.UUID(text) == wanted
    except ValueError:
        return False


def _pool_of_run(ctx: object, run_id: str | None) -> str | None:
    try:
        key = uuid.UUID(run_id or "")
    except ValueError:
        raise NotFound(f"flow run {run_id} not found") from None
    with ctx.sessions() as session:  # type: ignore[attr-defined]
        run = session.get(m.FlowRun, key)
        if run is None:
            raise NotFound(f"flow run {run_id} not found")
        return run.work_pool_name
