"""The task runs page: every task run newest first, each with its flow run (linked) or none when
its task was called outside any flow, as Prefect's task runs view; filtered by flow run (any or
none), task and state; older pages by key."""

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from orchestrator import schemas
from orchestrator.errors import InvalidInput
from orchestrator.server.api import included
from orchestrator.server.services import task_runs
from orchestrator.server.ui.render import page
from orchestrator.states import StateType

router = included.router(include_in_schema=False)
PAGE_SIZE = 50
OUTSIDE = "none"  # the "Flow run" filter's value for task runs of no flow run


@router.get("/task-runs")
def list_page(
    request: Request,
    flow_run: str = Query("", alias="flow-run", max_length=16),
    task: str = Query("", max_length=255),
    state: str = Query("", max_length=64),
    older: str = Query("", max_length=400),
) -> HTMLResponse:
    state_type = state if state in StateType.__members__ else None
    query = {"flow-run": OUTSIDE if flow_run == OUTSIDE else "", "task": task, "state": state_type or ""}
    with request.app.state.ctx.sessions() as session:
        for cursor in (older or None, None):
            try:
                rows, after = task_runs.page_all(session, outside_flows=flow_run == OUTSIDE, task_name=task or None,
                                                 state=state_type, cursor=cursor, limit=PAGE_SIZE)
                break
            except InvalidInput:  # a mangled address: the first page
                older = ""
    found = [(schemas.TaskRun.model_validate(row), run_name) for row, run_name in rows]
    return page(request, "task_runs.html", nav="task-runs", found=found, older=after, first=not older,
                query=query, states=[s.value for s in StateType], outside=OUTSIDE)
