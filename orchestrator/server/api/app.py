"""``create_app(settings)``: the FastAPI application and its background services."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import Engine

from orchestrator.server.api import included
from orchestrator.server.api.context import AppContext
from orchestrator.server.api.errors import install_error_handlers
from orchestrator.server.api.fast_routes import FastRoutes
from orchestrator.server.api.gate import Gate
from orchestrator.server.api.included import add_routes
from orchestrator.server.api.ingest import EventWriter
from orchestrator.server.api.latency import Latencies
from orchestrator.server.api.lazy import Family, LazyApp, LazyRoutes
from orchestrator.server.api.notify import REREAD_SECONDS, RunNotifier
from orchestrator.server.api.routes import broker as broker_routes
from orchestrator.server.api.routes import (
    deployments,
    flow_runs,
    flows,
    health,
    metrics,
    task_runs,
    work_pools,
)
from orchestrator.server.api.scopes import authorize
from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
from orchestrator.server.dispatcher import MAX_IDLE_SECONDS, Dispatcher
from orchestrator.server.hub import hub_for, reread_seconds
from orchestrator.server.reaper import Reaper
from orchestrator.server.retention import Ages, Retention
from orchestrator.server.scheduler import Scheduler, announce_changes
from orchestrator.server.services import api_keys, automation_changes, events
from orchestrator.server.triggers.service import TriggerService
from orchestrator.server.ui import include_pages, install_ui
from orchestrator.settings import Settings
from pools.broker import RunBroker, broker_for_url


def create_app(settings: Settings, *, broker: RunBroker | None = None, run_services: bool = True,
               database_checked: bool = False, engine: Engine | None = None) -> FastAPI:
    """Build the API. Migrations run at startup, unless ``database_checked`` says the caller has
    just brought the database to head (``orch server start`` does, before it builds the app: a
    second pass was a connection, the advisory lock and two queries on the start's main thread);
    ``run_services`` also starts the dispatcher. ``engine``: one of ``make_engine`` for the settings'
    database that the app takes over (disposed when it stops); ``orch server start`` gives the check's."""
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    if engine is None:
        engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    broker = broker or broker_for_url(settings.resolved_broker_url)
    # Every service and waiter learns of changes from the hub, on this replica and the others.
    hub = hub_for(settings)
    dispatcher = Dispatcher(sessions, broker, redispatch_seconds=settings.dispatcher_redispatch_seconds, hub=hub,
                            idle_seconds=reread_seconds(hub, settings, MAX_IDLE_SECONDS))
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        broker=broker,
        dispatcher=dispatcher,
        notifier=RunNotifier(hub, reread_seconds(hub, settings, REREAD_SECONDS)),
        latencies=Latencies(),
        hub=hub,
        gate=Gate(sessions, hub, settings.accepted_api_keys, ttl=reread_seconds(hub, settings, 2.0),
                  failures_per_minute=settings.server_auth_failures_per_minute,
                  run_key_grace=dt.timedelta(seconds=settings.run_key_grace_seconds)),
        event_writer=EventWriter(sessions),
    )
    reaper = Reaper(
        sessions, heartbeat_seconds=settings.worker_heartbeat_seconds, interval_seconds=settings.reaper_interval_seconds,
        cancelling_timeout_seconds=settings.cancelling_timeout_seconds, hub=hub,
    )
    retention = Retention(sessions, Ages.from_settings(settings), ctx.event_counts)  # old runs, logs, events go
    ctx.reaper = reaper  # told when a worker's or flow-run process's connection drops
    # New runs may be due before this dispatcher's planned wake-up: have it re-plan (any replica's
    # dispatcher publishes any run, so this one is enough).
    scheduler = Scheduler.from_settings(sessions, settings, on_created=dispatcher.wake, hub=hub)
    stop_announcing = announce_changes(sessions, hub)  # a changed schedule wakes the schedulers
    stop_announcing_events = events.announce_recorded(sessions, hub)  # recorded events wake stream readers
    stop_announcing_automations = automation_changes.announce_changed(sessions, hub)  # evaluators re-read them
    stop_announcing_keys = api_keys.announce_changed(sessions, hub)  # key caches forget, on every replica
    triggers = TriggerService(sessions, hub, publish_runs=dispatcher.publish_created,
                              reread_seconds=reread_seconds(hub, settings, 5.0))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not database_checked:
            migrate(engine)
        hub.start()
        if run_services:
            ctx.dispatcher.start()
            reaper.start()
            retention.start()
            scheduler.start()
            triggers.start()
        try:
            yield
        finally:
            triggers.stop()
            scheduler.stop()
            retention.stop()
            reaper.stop()
            ctx.dispatcher.stop()
            ctx.event_writer.close()  # what it was given is committed (and answered) before the hub closes
            stop_announcing()
            stop_announcing_events()
            stop_announcing_automations()
            stop_announcing_keys()
            ctx.gate.close()
            hub.close()
            broker.close()
            engine.dispose()

    app = LazyApp(
        title="orchestrator",
        version="0.1.0",
        openapi_url="/api/openapi.json",
        docs_url=None,  # /api/docs and /api/redoc: the UI serves them from bundled assets
        redoc_url=None,
        lifespan=lifespan,
        telemetry=telemetry(),
    )
    app.state.ctx = ctx
    app.state.scheduler = scheduler
    app.state.retention = retention
    app.state.triggers = triggers
    install_error_handlers(app)
    # Every route is checked against the one table of scopes (``api/scopes.py``; open ones too).
    authorized = [Depends(authorize)]
    # Families most servers are never asked for get an empty router in their place of the table,
    # filled at the first request for one of their paths (``api/lazy.py``).
    places = {name: APIRouter() for name in ("hooks", "schedules", "deployment_versions", "events", "automations",
                                             "api_keys", "webhooks", "ui")}
    # The routers every server serves have their routes put into the app's own table, in their
    # order (``included.add_routes``: an included router is one entry whose routes cost a request
    # ~4x as much to try); a lazy family's place is an included router, filled later.
    add_routes(app.router, deployments.first, prefix="/api", dependencies=authorized)  # the busiest route first
    add_routes(app.router, flow_runs.first, prefix="/api", dependencies=authorized)  # then those of every run's path
    # then the other routes every run or worker calls, again (each ~1 µs less per route ahead of it)
    for router in (included.again(flow_runs.router, ("POST", "/flow_runs/{run_id}/logs")),
                   included.again(task_runs.router, ("POST", task_runs.OF_RUN), ("POST", "/task_runs"),
                                  ("POST", "/task_runs/holders/{holder_id}/heartbeat")),
                   included.again(work_pools.router, ("POST", "/work_pools/{name}/workers/heartbeat"))):
        add_routes(app.router, router, prefix="/api", dependencies=authorized)
    add_routes(app.router, health.router, prefix="/api", dependencies=authorized)
    add_routes(app.router, broker_routes.router, prefix="/api", dependencies=authorized)  # open: checks a key itself
    add_routes(app.router, metrics.router, dependencies=authorized)
    app.include_router(places["hooks"], prefix="/api", dependencies=authorized)  # open: the hook's secret is its key
    # A deployment's sub-resources (schedules, versions) before its own routes.
    for router in (places["schedules"], places["deployment_versions"], deployments.router, places["events"],
                   flow_runs.router, flows.router, task_runs.router, work_pools.router, places["automations"], places["api_keys"],
                   places["webhooks"]):
        if router in places.values():
            app.include_router(router, prefix="/api", dependencies=authorized)
        else:
            add_routes(app.router, router, prefix="/api", dependencies=authorized)
    install_ui(app, places["ui"])
    app.load_on_first_request(LazyRoutes([
        # A deployment's schedules and versions: the CLI's ``orch deployment schedule ...`` and
        # ``versions`` (a deployment's schedules are written with it by ``orch deploy``).
        Family("deployment_parts", lambda: _include_deployment_parts(places), prefixes=(
            "/api/deployments/{}/schedules", "/api/deployments/{}/backfill", "/api/deployments/{}/versions")),
        Family("events", lambda: _include_events(places), prefixes=("/api/events",)),
        Family("automations", lambda: _include_automations(places), prefixes=("/api/automations",)),
        Family("api_keys", lambda: _include_api_keys(places), prefixes=("/api/api_keys",)),
        Family("webhooks", lambda: _include_webhooks(places), prefixes=("/api/webhooks", "/api/hooks")),
        Family("ui", lambda: include_pages(places["ui"]), prefixes=("/api/docs", "/api/redoc"), everything_else=True),
    ], eager_prefixes=("/api", "/metrics"), load_all_at=("/api/openapi.json",)))
    # The outermost of the app's own middleware (added last), ahead of the lazy routes' check and
    # ``RefuseNul``, which have nothing to do for the run path's routes it serves (the create, the
    # claim, the state reports: ``api/fast_routes.py``); inside Starlette's and FastAPI's (the 500
    # answer, telemetry, the body limit).
    app.add_middleware(FastRoutes)
    return app


def telemetry() -> dict[str, bool] | None:
    """FastAPI's ``telemetry`` option: its own (OpenTelemetry) as by default when the OpenTelemetry
    SDK is installed or ``FASTAPI_OTEL_AUTO_CONFIGURE`` asks for it; otherwise off. FastAPI asks at
    every request whether global tracer, meter and logger providers have been configured (~45k
    instructions of the event loop a request, bench/layer_instructions.py); without the SDK only
    the API's no-op providers exist (our dependencies bring the API alone), so the answer is no:
    off, a request costs that less and nothing else changes."""
    import importlib.util
    import os

    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true" or importlib.util.find_spec(
            "opentelemetry.sdk") is not None:
        return None  # FastAPI's defaults
    return {"tracing": False, "metrics": False, "logs": False}


# The lazy families' routes, each into its place (``api/lazy.py``) as the place's own routes: one
# included router to try, not a router included in another (``included.add_routes``).

def _include_deployment_parts(places: dict[str, APIRouter]) -> None:
    from orchestrator.server.api.routes import deployment_versions, schedules

    add_routes(places["schedules"], schedules.router)
    add_routes(places["deployment_versions"], deployment_versions.router)


def _include_events(places: dict[str, APIRouter]) -> None:
    from orchestrator.server.api.routes import events

    add_routes(places["events"], events.router)


def _include_automations(places: dict[str, APIRouter]) -> None:
    from orchestrator.server.api.routes import automations

    add_routes(places["automations"], automations.router)


def _include_api_keys(places: dict[str, APIRouter]) -> None:
    from orchestrator.server.api.routes import api_keys

    add_routes(places["api_keys"], api_keys.router)


def _include_webhooks(places: dict[str, APIRouter]) -> None:
    from orchestrator.server.api.routes import webhooks

    add_routes(places["hooks"], webhooks.hooks)
    add_routes(places["webhooks"], webhooks.router)


__all__ = ["AppContext", "create_app"]
