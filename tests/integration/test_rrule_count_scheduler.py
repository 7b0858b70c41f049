"""The scheduler service creates at most COUNT runs of a counted RRULE, over passes, restarts
(a fresh Scheduler: nothing cached) and a catch-up after downtime, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.scheduler import Scheduler
from orchestrator.server.services import deployments, work_pools

T0 = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)


def test_a_counted_rrule_gets_count_runs_and_no_more(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p", catchup="ALL",
            schedules=[{"rrule": "DTSTART:20300101T090000\nRRULE:FREQ=MINUTELY;INTERVAL=30;COUNT=6"}]))
    for minutes in (0, 45, 61, 130):  # each pass a new process, as after a restart
        Scheduler(sessions).run_once(T0 + dt.timedelta(minutes=minutes))
    Scheduler(sessions).run_once(T0 + dt.timedelta(days=2))  # after a downtime: catch-up finds nothing new
    with sessions() as session:
        runs = list(session.scalars(select(m.FlowRun).where(m.FlowRun.deployment_id == deployment.id)
                                    .order_by(m.FlowRun.expected_start_time)))
    assert [r.expected_start_time.strftime("%H:%M") for r in runs] == [
        "09:00", "09:30", "10:00", "10:30", "11:00", "11:30"]
