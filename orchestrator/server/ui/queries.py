"""Reads the pages need that the API has no route for: each one query on an indexed column, so a
page stays cheap with a million runs. Every change of state goes through the API's routes."""

import datetime as dt
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import work_pools
from orchestrator.states import StateType

DASHBOARD_HOURS = 24


def runs_by_state(session: Session, hours: int = DASHBOARD_HOURS) -> dict[str, int]:
    """Runs expected to start in the last ``hours`` (not those still ahead), counted by state type.
    One range scan of the (state_type, expected_start_time) index per state type, not a scan of
    the table."""
    now = utcnow()
    since = now - dt.timedelta(hours=hours)
    counts = {}
    for state in StateType:
        counts[state.value] = session.scalar(
            select(func.count()).select_from(m.FlowRun).where(
                m.FlowRun.state_type == state.value, m.FlowRun.expected_start_time >= since,
                m.FlowRun.expected_start_time <= now)) or 0
    return counts


def late_runs(session: Session, limit: int = 10) -> list[m.FlowRun]:
    """The oldest Late runs (SCHEDULED, named Late by the scheduler)."""
    return list(session.scalars(
        select(m.FlowRun).where(m.FlowRun.state_type == StateType.SCHEDULED.value, m.FlowRun.state_name == "Late")
        .order_by(m.FlowRun.expected_start_time).limit(limit)))


def workers_by_pool(session: Session, heartbeat_seconds: float) -> dict[str, dict[str, int]]:
    """For each pool name: how many workers are online and offline."""
    cutoff = work_pools.online_cutoff(heartbeat_seconds)
    online = func.sum(case((m.Worker.last_heartbeat >= cutoff, 1), else_=0))
    rows = session.execute(
        select(m.WorkPool.name, func.count(m.Worker.id), online)
        .select_from(m.WorkPool).outerjoin(m.Worker, m.Worker.pool_id == m.WorkPool.id).group_by(m.WorkPool.name))
    return {name: {"online": int(up or 0), "offline": int(total) - int(up or 0)} for name, total, up in rows}


def flow_names(session: Session, flow_ids: set[Any]) -> dict[Any, str]:
    if not flow_ids:
        return {}
    return dict(session.execute(select(m.Flow.id, m.Flow.name).where(m.Flow.id.in_(flow_ids))).tuples())
