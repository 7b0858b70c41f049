"""The task runs of a flow run that ended CRASHED or CANCELLED. The process that ran them is gone
(killed, lost, or stopped by the cancellation), so nothing else would report their end: without
this they would stay RUNNING under a final flow run for good, in the UI and the API."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from orchestrator.server.db import models as m
from orchestrator.states import DEFAULT_NAMES, StateType


def end_with_flow_run(session: Session, flow_run_id: uuid.UUID, ended: StateType, now: dt.datetime) -> None:
    """Give the flow run's open task runs its final state (read along ``task_runs(flow_run_id, ...)``).
    A report the process sent before it died and that arrives later still wins: it is the truth."""
    session.execute(
        update(m.TaskRun)
        .where(m.TaskRun.flow_run_id == flow_run_id, m.TaskRun.state_type.in_(m.OPEN_TASK_RUN_STATES))
        .values(state_type=str(ended), state_name=DEFAULT_NAMES[ended], end_time=now, updated=now,
                state_message=f"its flow run ended {ended} while this task run was open")
        .execution_options(synchronize_session=False)
    )
