"""Subflow runs, as in Prefect: a flow called inside a tracked run is a run of its own whose
``parent_task_run_id`` is the task run standing for the call in its caller's run
(``services/direct_runs.py`` writes it). A run's parent and children are found through that task
run, so a caller's run and its subflow runs are related once its process has sent the task run."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.server.services import flow_runs

CHILDREN_LIMIT = 200  # a flow calling more subflows than this lists them with ``orch flow-run ls``


def relatives(session: Session, run_id: uuid.UUID) -> tuple[m.FlowRun, m.FlowRun | None, list[m.FlowRun], bool]:
    """The run, the run that called it (None: not a subflow run, or its caller's task run is not
    recorded yet), its subflow runs oldest first (up to ``CHILDREN_LIMIT``), and whether there are
    more. ``NotFound`` for an unknown run."""
    run = flow_runs.get(session, run_id)
    parent = None
    if run.parent_task_run_id is not None:
        parent = session.scalar(select(m.FlowRun).join(m.TaskRun, m.TaskRun.flow_run_id == m.FlowRun.id)
                                .where(m.TaskRun.id == run.parent_task_run_id))
    children = list(session.scalars(
        select(m.FlowRun).join(m.TaskRun, m.TaskRun.id == m.FlowRun.parent_task_run_id)
        .where(m.TaskRun.flow_run_id == run_id)
        .order_by(m.FlowRun.expected_start_time, m.FlowRun.id).limit(CHILDREN_LIMIT + 1)))
    return run, parent, children[:CHILDREN_LIMIT], len(children) > CHILDREN_LIMIT
