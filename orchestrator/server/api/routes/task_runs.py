"""Task runs: a flow run's under ``/api/flow_runs/{id}/task_runs`` (written in batches by the
flow-run process, read by ``orch flow-run inspect`` and the UI), and those of tasks called outside
any flow under ``/api/task_runs`` (written by the SDK of any program, read by ``orch task-run ls``)."""

import uuid

from fastapi import Body, Query, Request, Response, status

from orchestrator import schemas
from orchestrator.server.api import included, paging
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import task_run_leases, task_runs

router = included.router(tags=["task runs"])
MAX_BATCH = 1000
OF_RUN = "/flow_runs/{run_id}/task_runs"
HOLDER_HELP = ("The program's lease id (its heartbeats: ``/task_runs/holders/{id}/heartbeat``): while it is "
               "silent, its open task runs are marked CRASHED by the reaper.")


@router.post(OF_RUN, status_code=status.HTTP_201_CREATED)
def write_task_runs(run_id: uuid.UUID, ctx: Ctx,
                    body: list[schemas.TaskRunWrite] = Body(max_length=MAX_BATCH)) -> dict[str, int]:
    """Insert or update task runs (each one as its process last saw it; ids are the process's)."""
    with ctx.transaction() as session:
        return {"written": task_runs.write(session, run_id, body)}


@router.get(OF_RUN)
def read_task_runs(run_id: uuid.UUID, ctx: Ctx, request: Request, response: Response,
                   cursor: str | None = paging.CURSOR,
                   offset: int = Query(0, ge=0, le=schemas.INT64_MAX, description=paging.OFFSET_HELP),
                   limit: int = Query(1000, ge=1, le=10000)) -> list[schemas.TaskRun]:
    """The run's task runs in the order the flow created them; the ``Link`` header's rel="next"
    reads on."""
    with ctx.sessions() as session:
        rows, after = task_runs.page(session, run_id, cursor=cursor, offset=offset, limit=limit)
        out = [schemas.TaskRun.model_validate(row) for row in rows]
    paging.link_next(request, response, after)
    return out


@router.post("/task_runs", status_code=status.HTTP_201_CREATED)
def write_task_runs_outside_flows(ctx: Ctx, body: list[schemas.TaskRunWrite] = Body(max_length=MAX_BATCH),
                                  holder: uuid.UUID | None = Query(None, description=HOLDER_HELP)
                                  ) -> dict[str, int]:
    """Insert or update task runs of tasks called outside any flow (ids are the caller's; a task
    run of a flow run is not changed from here)."""
    with ctx.transaction() as session:
        return {"written": task_runs.write(session, None, body, holder_id=holder)}


@router.post("/task_runs/holders/{holder_id}/heartbeat")
async def task_run_holder_heartbeat(holder_id: uuid.UUID, ctx: Ctx) -> dict[str, float]:
    """The program holding these task runs is alive: one beat for all of them. The answer says how
    often to beat (the server's heartbeat period; three missed make its open task runs CRASHED)."""

    def beat() -> None:
        with ctx.single_write() as session:
            task_run_leases.beat(session, holder_id)

    await ctx.record_beat(beat)  # refused, or late, it is told to the reapers
    return {"heartbeat_seconds": ctx.settings.worker_heartbeat_seconds}


@router.delete("/task_runs/holders/{holder_id}", status_code=status.HTTP_204_NO_CONTENT)
def release_task_run_holder(holder_id: uuid.UUID, ctx: Ctx) -> None:
    """The program is exiting: its lease ends (any task run it left open is then crashed)."""
    with ctx.single_write() as session:
        task_run_leases.release(session, holder_id)


@router.get("/task_runs")
def list_task_runs_outside_flows(ctx: Ctx, request: Request, response: Response,
                                 task_name: str | None = Query(None, max_length=255, description="Only this task's."),
                                 cursor: str | None = paging.CURSOR,
                                 limit: int = Query(100, ge=1, le=10000)) -> list[schemas.TaskRun]:
    """Task runs of tasks called outside any flow, newest first; the ``Link`` header's rel="next"
    reads on."""
    with ctx.sessions() as session:
        rows, after = task_runs.page_outside_flows(session, task_name=task_name, cursor=cursor, limit=limit)
        out = [schemas.TaskRun.model_validate(row) for row in rows]
    paging.link_next(request, response, after)
    return out
