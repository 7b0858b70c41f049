"""Task runs: the batches a flow-run process reports, and reading them back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import keyset
from orchestrator.server.services.flow_runs import get as get_flow_run

# Every column a later report may change; ``created`` and ``flow_run_id`` stay as first reported.
_UPDATED = ("name", "task_name", "version", "tags", "state_type", "state_name", "state_message", "run_count",
            "max_retries", "start_time", "end_time", "updated")


def write(session: Session, flow_run_id: uuid.UUID, task_runs: Sequence[schemas.TaskRunWrite]) -> int:
    """Insert or update each task run of the batch (one statement). A task run already recorded
    for another flow run is left alone: ids are the reporter's, and one run cannot rewrite another's."""
    get_flow_run(session, flow_run_id)
    latest = {task_run.id: task_run for task_run in task_runs}  # a batch may carry one run twice: the last wins
    if not latest:
        return 0
    now = utcnow()
    rows = [{**task_run.model_dump(), "flow_run_id": flow_run_id, "updated": now} for task_run in latest.values()]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(m.TaskRun)
    statement = statement.on_conflict_do_update(
        index_elements=[m.TaskRun.id],
        set_={column: statement.excluded[column] for column in _UPDATED},
        where=m.TaskRun.flow_run_id == statement.excluded.flow_run_id,
    )
    session.execute(statement, rows)
    return len(rows)


def list_(session: Session, flow_run_id: uuid.UUID, *, offset: int = 0, limit: int = 1000) -> list[m.TaskRun]:
    return page(session, flow_run_id, offset=offset, limit=limit)[0]


CREATED_FIRST = keyset.Order((m.TaskRun.created, m.TaskRun.id))  # the (flow_run_id, created) index


def page(session: Session, flow_run_id: uuid.UUID, *, cursor: str | None = None, offset: int = 0,
         limit: int = 1000) -> tuple[list[m.TaskRun], str | None]:
    """The run's task runs in the order they were created, after ``cursor``; and the next cursor."""
    get_flow_run(session, flow_run_id)
    statement = select(m.TaskRun).where(m.TaskRun.flow_run_id == flow_run_id)
    return keyset.page_or_offset(session, statement, CREATED_FIRST, limit, cursor=cursor, offset=offset)
