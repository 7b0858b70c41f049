"""Task runs of a flow run, under ``/api/flow_runs/{id}/task_runs``: written in batches by the
flow-run process, read by ``orch flow-run inspect`` and the UI."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Body, Query, status

from orchestrator import schemas
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import task_runs

router = APIRouter(prefix="/flow_runs/{run_id}/task_runs", tags=["task runs"])
MAX_BATCH = 1000


@router.post("", status_code=status.HTTP_201_CREATED)
def write_task_runs(run_id: uuid.UUID, ctx: Ctx,
                    body: list[schemas.TaskRunWrite] = Body(max_length=MAX_BATCH)) -> dict[str, int]:
    """Insert or update task runs (each one as its process last saw it; ids are the process's)."""
    with ctx.transaction() as session:
        return {"written": task_runs.write(session, run_id, body)}


@router.get("")
def read_task_runs(run_id: uuid.UUID, ctx: Ctx, offset: int = Query(0, ge=0, le=schemas.INT64_MAX),
                   limit: int = Query(1000, ge=1, le=10000)) -> list[schemas.TaskRun]:
    """The run's task runs in the order the flow created them."""
    with ctx.sessions() as session:
        return [schemas.TaskRun.model_validate(row) for row in task_runs.list_(session, run_id, offset=offset,
                                                                                limit=limit)]
