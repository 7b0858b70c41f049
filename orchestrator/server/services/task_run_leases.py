"""Leases of programs running tasks outside any flow. Such a program reports its task runs with
its holder id (``write(..., holder_id=)``) and beats once a heartbeat period for all of them
(``beat``); when it is killed, nothing reports their end, so the reaper marks the open task runs
of a silent holder CRASHED (``crash_silent``), as Prefect does for a crashed process's runs.

A task run is judged by its holder's last heartbeat and its own last report: a run reported less
than one silence ago is never judged (its holder may not have beaten yet)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.server.db.models import task_run_holders as holders
from orchestrator.server.db.types import utcnow

BATCH = 500  # task runs crashed per statement: a pass's work stays bounded
# The partial index's own predicate (``m.OPEN_HELD_TASK_RUNS``), written out so that PostgreSQL
# proves the index applies (it cannot from bound parameters).
_OPEN = text("task_runs.holder_id IS NOT NULL AND task_runs.state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')")


def beat(session: Session, holder_id: uuid.UUID, now: dt.datetime | None = None) -> None:
    """The holder is alive: one row written, however many task runs it holds."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(holders).values(id=holder_id, heartbeat_at=now or utcnow())
    session.execute(statement.on_conflict_do_update(index_elements=[holders.c.id],
                                                    set_={"heartbeat_at": statement.excluded.heartbeat_at}))


def release(session: Session, holder_id: uuid.UUID) -> None:
    """The program is exiting: its lease ends (a task run it left open is judged as a silent one's)."""
    session.execute(delete(holders).where(holders.c.id == holder_id))


def crash_silent(session: Session, now: dt.datetime, silence: dt.timedelta) -> int:
    """Mark CRASHED (at most ``BATCH``) open task runs whose holder has not beaten for ``silence``
    nor reported them for as long; forget holders silent that long with nothing open. Returns how
    many task runs it crashed."""
    cutoff = now - silence
    alive = exists().where(holders.c.id == m.TaskRun.holder_id, holders.c.heartbeat_at >= cutoff)
    lost = select(m.TaskRun.id).where(_OPEN, m.TaskRun.updated < cutoff, ~alive).limit(BATCH)
    seconds = f"{silence.total_seconds():g}"
    crashed = session.execute(
        update(m.TaskRun)
        .where(m.TaskRun.id.in_(lost.scalar_subquery()), _OPEN)  # _OPEN again: a report that just came wins
        .values(state_type="CRASHED", state_name="Crashed", end_time=now, updated=now,
                state_message=f"the program running this task outside any flow stopped reporting (no heartbeat "
                              f"for {seconds} s: killed, or its machine lost); the task run is lost")
        .execution_options(synchronize_session=False)
    ).rowcount
    still_open = exists().where(m.TaskRun.holder_id == holders.c.id, _OPEN)
    session.execute(delete(holders).where(holders.c.heartbeat_at < cutoff, ~still_open)
                    .execution_options(synchronize_session=False))
    return crashed
