"""Task runs: the batches a flow-run process reports, those of tasks called outside any flow
(``flow_run_id`` None), and reading them back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import keyset
from orchestrator.server.services.flow_runs import get as get_flow_run

# Every column a later report may change; ``created``, ``flow_run_id`` and ``holder_id`` stay as first reported.
_UPDATED = ("name", "task_name", "version", "tags", "state_type", "state_name", "state_message", "run_count",
            "max_retries", "start_time", "end_time", "updated")


def write(session: Session, flow_run_id: uuid.UUID | None, task_runs: Sequence[schemas.TaskRunWrite], *,
          holder_id: uuid.UUID | None = None) -> int:
    """Insert or update each task run of the batch (one statement): of the flow run, or of no flow
    run (tasks called outside a flow, held by ``holder_id``: ``task_run_leases``). A task run
    already recorded for another flow run (or for none, or for one when none is given) is left
    alone: ids are the reporter's, and one run cannot rewrite another's."""
    if flow_run_id is not None:
        get_flow_run(session, flow_run_id)
    latest = {task_run.id: task_run for task_run in task_runs}  # a batch may carry one run twice: the last wins
    if not latest:
        return 0
    now = utcnow()
    rows = [{**task_run.model_dump(), "flow_run_id": flow_run_id, "updated": now, "holder_id": holder_id}
            for task_run in latest.values()]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(m.TaskRun)
    same_run = m.TaskRun.flow_run_id.is_(None) if flow_run_id is None else \
        m.TaskRun.flow_run_id == statement.excluded.flow_run_id
    statement = statement.on_conflict_do_update(
        index_elements=[m.TaskRun.id],
        set_={column: statement.excluded[column] for column in _UPDATED},
        where=same_run,
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


NEWEST_FIRST = keyset.Order((m.TaskRun.created, m.TaskRun.id), descending=True)


def page_all(session: Session, *, outside_flows: bool = False, task_name: str | None = None,
             state: str | None = None, cursor: str | None = None,
             limit: int = 50) -> tuple[list[tuple[m.TaskRun, str | None]], str | None]:
    """Every task run newest first, each with its flow run's name (None: called outside any flow,
    or its run is gone); only those outside flows when ``outside_flows``, of one task when
    ``task_name``, in one state type when ``state``. Along the (created, id) index, or the one
    led by the filtered column: (task_name, created, id), (state_type, created, id), or
    (flow_run_id, created) outside flows."""
    statement = _selected(outside_flows=outside_flows, task_name=task_name, state=state)
    rows, after = keyset.page(session, statement, NEWEST_FIRST, limit, cursor)
    run_ids = {row.flow_run_id for row in rows if row.flow_run_id is not None}
    names = {run_id: name for run_id, name in session.execute(
        select(m.FlowRun.id, m.FlowRun.name).where(m.FlowRun.id.in_(run_ids)))} if run_ids else {}
    return [(row, names.get(row.flow_run_id) if row.flow_run_id else None) for row in rows], after


def page_outside_flows(session: Session, *, task_name: str | None = None, cursor: str | None = None,
                       offset: int = 0, limit: int = 100) -> tuple[list[m.TaskRun], str | None]:
    """Task runs of tasks called outside any flow, newest first (of one task when ``task_name``)."""
    statement = _selected(outside_flows=True, task_name=task_name)
    return keyset.page_or_offset(session, statement, NEWEST_FIRST, limit, cursor=cursor, offset=offset)


def _selected(*, outside_flows: bool, task_name: str | None = None, state: str | None = None) -> Select[Any]:
    """The task runs the lists above page through: outside flows only, of one task, in one state type."""
    statement = select(m.TaskRun)
    if outside_flows:
        statement = statement.where(m.TaskRun.flow_run_id.is_(None))
    if task_name is not None:
        statement = statement.where(m.TaskRun.task_name == task_name)
    if state is not None:
        statement = statement.where(m.TaskRun.state_type == state)
    return statement
