"""Connection leases: a faster death notice than heartbeat silence.

A worker keeps a request open at all times (its cancellation long-poll), and so does a flow-run
process (its held heartbeat). When such a process dies, its kernel closes the connection and the
API sees the client leave at once. A heartbeat only says "alive"; a dropped connection says
"probably dead": the API backdates the holder's last heartbeat so that, unless it reconnects
within a short grace (a live client re-opens its request at once), the reaper judges it silent
``grace`` seconds from now instead of a whole silence period (3 heartbeats) later. A crash of a
machine or a network partition sends no such notice; heartbeat silence still covers those.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.db import models as m


def grace_seconds(silence: dt.timedelta) -> float:
    """How long a dropped holder has to reconnect before it counts as gone."""
    return min(2.0, silence.total_seconds() / 2)


def lapsed(now: dt.datetime, silence: dt.timedelta) -> dt.datetime:
    """The heartbeat time that makes the reaper judge its owner silent ``grace`` after ``now``."""
    return now - silence + dt.timedelta(seconds=grace_seconds(silence))


def lapse_worker(session: Session, at: dt.datetime, *, pool_name: str, worker_name: str) -> None:
    """Backdate a worker's heartbeat to ``at`` (never forward: a newer beat stays)."""
    pool_id = select(m.WorkPool.id).where(m.WorkPool.name == pool_name).scalar_subquery()
    session.execute(update(m.Worker)
                    .where(m.Worker.pool_id == pool_id, m.Worker.name == worker_name, m.Worker.last_heartbeat > at)
                    .values(last_heartbeat=at))


def lapse_run(session: Session, at: dt.datetime, *, run_id: uuid.UUID) -> None:
    """Backdate a flow-run process's heartbeat to ``at`` (never forward)."""
    session.execute(update(m.FlowRun).where(m.FlowRun.id == run_id, m.FlowRun.heartbeat_at > at)
                    .values(heartbeat_at=at))
