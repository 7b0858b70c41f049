"""Flow runs of flows called directly: a program calls a ``@flow`` function with ``ORCH_API_URL``
set, and the run is recorded as Prefect records one (``sdk/direct_runs.py``), with no deployment.

The program runs the flow itself, at once: the run is written PENDING and moved to RUNNING in
the same transaction, through the writer every creator shares (``new_runs``) and the one writer
of states (``transitions``), so its history and events are any run's: Pending, then Running.
Having no pool, it is never published by a dispatcher nor claimable by a worker (a claim needs
SCHEDULED, and its in-process retries are ``AwaitingRetry``, held). Its program heartbeats it as a
flow-run process does (``sdk/run_lease.py``); when the program dies, the reaper ends it CRASHED.

A flow called inside a tracked run is such a run too, a subflow run: ``parent_task_run_id`` names
the task run standing for the call in its caller's run (``services/subflows.py`` reads them back).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.orm import Session

from orchestrator import schemas
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import flow_runs, flows, transitions
from orchestrator.server.services.new_runs import direct_run_values, insert_runs
from orchestrator.server.services.run_statements import RunRow
from orchestrator.states import StateType


def start(session: Session, request: schemas.DirectFlowRunCreate, *, parent_run_id: uuid.UUID | None = None,
          now: dt.datetime | None = None) -> RunRow:
    """Create the run RUNNING (its flow created if new); with ``parent_run_id``, a subflow run
    called in that run (``request`` a ``SubflowRunCreate``; ``NotFound`` if the run is not). No commit."""
    now = now or utcnow()
    if parent_run_id is not None:
        flow_runs.get(session, parent_run_id)
    flow = flows.upsert(session, request.flow_name)
    parent_task_run_id = request.parent_task_run_id if isinstance(request, schemas.SubflowRunCreate) else None
    row = direct_run_values(flow_id=flow.id, name=request.name, parameters=request.parameters, tags=request.tags,
                            now=now, parent_task_run_id=parent_task_run_id)
    insert_runs(session, [row])
    return transitions.transition(session, row["id"], StateType.RUNNING, only_from=[StateType.PENDING],
                                  effects=[transitions.loaded(request.flow_version, None)], now=now)
