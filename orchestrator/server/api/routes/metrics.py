"""Prometheus metrics: with keys in use they need the read scope, unless ``ORCH_METRICS_OPEN``
(``api/scopes.py``). Counts come from the database at scrape time (every replica reports the
same truth), each from a cheap read however long the history: runs in a non-final state over the
(state_type, expected_start_time) index (they are few), runs in a final state from the counts the
database keeps (``db/final_counts.py``). Latency histograms are this process's own observations
(``api/latency.py``)."""

from fastapi import Request, Response
from sqlalchemy import func, select

from orchestrator.server.api import included
from orchestrator.server.api.context import Ctx
from orchestrator.server.db import final_counts
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services.work_pools import online_cutoff
from orchestrator.states import FINAL_STATES, StateType

_LIVE = sorted(s.value for s in StateType if s not in FINAL_STATES)

router = included.router(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics(ctx: Ctx, request: Request) -> Response:
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry()
    runs = Gauge("orch_flow_runs", "Flow runs by state", ["state"], registry=registry)
    depth = Gauge("orch_queue_depth", "Due SCHEDULED runs by pool and queue", ["pool", "queue"], registry=registry)
    online = Gauge("orch_workers_online", "Online workers by pool", ["pool"], registry=registry)
    with ctx.sessions() as session:
        for state, count in session.execute(
            select(m.FlowRun.state_type, func.count()).where(m.FlowRun.state_type.in_(_LIVE))
            .group_by(m.FlowRun.state_type)
        ):
            runs.labels(state=state).set(count)
        finished, delta_rows = final_counts.read(session)
        for state in sorted(s.value for s in FINAL_STATES):  # every one, 0 too: alerts see the series begin
            runs.labels(state=state).set(finished.get(state, 0))
        for pool, queue, count in session.execute(
            select(m.FlowRun.work_pool_name, m.FlowRun.work_queue_name, func.count())
            .where(m.FlowRun.state_type == "SCHEDULED", m.FlowRun.expected_start_time <= utcnow())
            .group_by(m.FlowRun.work_pool_name, m.FlowRun.work_queue_name)
        ):
            depth.labels(pool=pool or "", queue=queue or "").set(count)
        cutoff = online_cutoff(ctx.settings.worker_heartbeat_seconds)
        for pool, count in session.execute(
            select(m.WorkPool.name, func.count(m.Worker.id))
            .outerjoin(m.Worker, (m.Worker.pool_id == m.WorkPool.id) & (m.Worker.last_heartbeat >= cutoff))
            .group_by(m.WorkPool.name)
        ):
            online.labels(pool=pool).set(count)
    if delta_rows > final_counts.COMPACT_ABOVE:
        with ctx.transaction() as session:
            final_counts.compact(session)
    counts = ctx.event_counts  # this replica's own, as the latencies (Prometheus adds replicas up)
    for name, what, value in (("received", "Events sent to POST /api/events", counts.received_total),
                              ("recorded", "Events stored (new ids)", counts.recorded_total),
                              ("dropped", "Events dropped as duplicates (an id already stored)", counts.dropped_total),
                              ("deleted", "Events deleted by retention", counts.deleted_total)):
        Counter(f"orch_events_{name}", what, registry=registry).inc(value)
    deleted = Counter("orch_retention_deleted", "Rows deleted by retention, by kind (runs, task_runs, logs, events)", ["kind"],
                      registry=registry)
    for kind, count in request.app.state.retention.deleted.items():  # this replica's own
        deleted.labels(kind=kind).inc(count)
    failures = Counter("orch_auth_failures", "Failed authentications by reason (rate_limited: answered 429)",
                       ["reason"], registry=registry)
    for reason, count in ctx.gate.failures_total.items():  # this replica's own
        failures.labels(reason=reason).inc(count)
    body = generate_latest(registry) + generate_latest(ctx.latencies.collectors())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
