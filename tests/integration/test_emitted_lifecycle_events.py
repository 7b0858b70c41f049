"""Deployments, schedules, work pools, queues and workers emit their lifecycle events in the
transaction of the change; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, leases, work_pools
from orchestrator.server.services import schedules as svc


def emitted(session: Any, prefix: str) -> list[m.Event]:
    return list(session.scalars(select(m.Event).where(m.Event.event.startswith(prefix)).order_by(m.Event.seq)))


def names(session: Any, prefix: str) -> list[str]:
    return [e.event.removeprefix(prefix) for e in emitted(session, prefix)]


def test_deployment_and_schedule_lifecycle(sessions: Any) -> None:
    request = schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p",
                                       schedules=[schemas.ScheduleCreate(interval=60, slug="every-minute")])
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, request)
        deployment_id = deployment.id
    with sessions.begin() as session:
        deployments.upsert(session, request.model_copy(update={"description": "new"}))  # an update
        deployments.upsert(session, request.model_copy(update={"description": "new"}))  # identical: nothing
        deployments.update(session, deployment_id, schemas.DeploymentUpdate(paused=True))
        deployments.update(session, deployment_id, schemas.DeploymentUpdate(paused=False))
    with sessions.begin() as session:
        deployment = deployments.get(session, deployment_id)
        svc.update_(session, deployment, "every-minute", schemas.ScheduleUpdate(active=False))
        svc.update_(session, deployment, "every-minute", schemas.ScheduleUpdate(interval=120))
        svc.create(session, deployment, schemas.ScheduleCreate(cron="0 * * * *", slug="hourly"))
        svc.delete_(session, deployment, "hourly")
    with sessions.begin() as session:
        deployments.delete(session, deployment_id)
    with sessions() as session:
        assert names(session, "orchestrator.deployment.") == ["created", "updated", "paused", "resumed", "deleted"]
        updated = emitted(session, "orchestrator.deployment.updated")[0]
        assert updated.payload == {"updated_fields": ["description"],
                                   "updates": {"description": {"from": None, "to": "new"}}}
        assert updated.resource["orchestrator.resource.id"] == f"orchestrator.deployment.{deployment_id}"
        assert [r["orchestrator.resource.role"] for r in updated.related] == ["flow"]
        assert names(session, "orchestrator.schedule.") == ["created", "paused", "updated", "created", "deleted"]
        for event in emitted(session, "orchestrator.schedule."):
            assert event.related[0]["orchestrator.resource.id"] == f"orchestrator.deployment.{deployment_id}"


def test_pool_and_queue_lifecycle(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        work_pools.create_queue(session, "p", schemas.WorkQueueCreate(name="q"))
    with sessions.begin() as session:
        work_pools.update(session, "p", schemas.WorkPoolUpdate(concurrency_limit=3, paused=True))
        work_pools.update(session, "p", schemas.WorkPoolUpdate(paused=False))
        work_pools.update_queue(session, "p", "q", schemas.WorkQueueUpdate(paused=True))
        work_pools.delete_queue(session, "p", "q")
        work_pools.delete(session, "p")
    with sessions() as session:
        assert names(session, "orchestrator.work-pool.") == ["created", "updated", "paused", "resumed", "deleted"]
        assert emitted(session, "orchestrator.work-pool.updated")[0].payload["updates"] == {
            "concurrency_limit": {"from": None, "to": 3}}
        assert names(session, "orchestrator.work-queue.") == ["created", "created", "paused", "deleted"]


def test_worker_online_offline_and_pool_readiness(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
    with sessions.begin() as session:
        work_pools.heartbeat(session, "p", "w1", heartbeat_seconds=10)
        work_pools.heartbeat(session, "p", "w1", heartbeat_seconds=10)  # still online: nothing new
        work_pools.heartbeat(session, "p", "w2", heartbeat_seconds=10)  # online; the pool was ready already
    silent_since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=31)
    with sessions.begin() as session:  # both fell silent three heartbeats ago
        for name in ("w1", "w2"):
            leases.lapse_worker(session, silent_since, pool_name="p", worker_name=name)
    for _ in range(2):  # a second pass (or another replica) adds nothing
        with sessions.begin() as session:
            work_pools.mark_offline(session, 10)
    with sessions.begin() as session:
        work_pools.heartbeat(session, "p", "w1", heartbeat_seconds=10)  # back
    with sessions() as session:
        worker_events = emitted(session, "orchestrator.worker.")
        assert [(e.event, e.resource["orchestrator.resource.name"]) for e in worker_events] == [
            ("orchestrator.worker.online", "w1"), ("orchestrator.worker.online", "w2"),
            ("orchestrator.worker.offline", "w1"), ("orchestrator.worker.offline", "w2"),
            ("orchestrator.worker.online", "w1")]
        assert worker_events[0].resource["orchestrator.resource.id"] == "orchestrator.worker.p.w1"
        assert names(session, "orchestrator.work-pool.") == ["created", "ready", "not-ready", "ready"]
        assert names(session, "orchestrator.work-queue.") == ["created", "ready", "not-ready", "ready"]
