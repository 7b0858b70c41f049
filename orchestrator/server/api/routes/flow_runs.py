import uuid
from typing import Any

from fastapi import Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from orchestrator import schemas
from orchestrator.schemas.base import new_list
from orchestrator.schemas.flow_runs import INFRASTRUCTURE_ID_MAX
from orchestrator.server.api import included, notify, paging
from orchestrator.server.api.context import AppContext, Ctx
from orchestrator.server.api.notify import long_poll
from orchestrator.server.db import models as m
from orchestrator.server.hub import Event
from orchestrator.server.services import (
    api_keys,
    claims,
    direct_runs,
    events,
    flow_runs,
    leases,
    subflows,
    waiting,
)
from orchestrator.states import FINAL_STATES, StateType

router = included.router(prefix="/flow_runs", tags=["flow runs"])


def publish_and_notify(ctx: AppContext, run: m.FlowRun, *also: Event) -> None:
    """After a new run's commit: publish it if it was marked to be (``dispatched_at``), and announce
    it with ``also`` (``AppContext.state_changed``)."""
    ctx.dispatcher.publish_created([run])
    ctx.state_changed(run, *also)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.DirectFlowRun)
def create_direct_flow_run(body: schemas.DirectFlowRunCreate, ctx: Ctx) -> Response:
    """A run of a flow its own program calls directly (no deployment), created RUNNING for that
    program to report on and heartbeat; no worker claims it (``services/direct_runs.py``). With
    keys required, the answer carries the run's own key for those reports, as a claim does."""
    return _created_direct_run(ctx, body)


def _created_direct_run(ctx: AppContext, body: schemas.DirectFlowRunCreate, parent_run_id: uuid.UUID | None = None
                        ) -> Response:
    with ctx.transaction() as session:
        run = direct_runs.start(session, body, parent_run_id=parent_run_id)
        out = schemas.DirectFlowRun(flow_run=flow_runs.to_schema(run, session))
        if ctx.gate.enabled():
            out.api_key = api_keys.create_run_key(session, run.id)
        announced = events.take_announcement(session)
    ctx.state_changed(run, *announced)
    return Response(out.model_dump_json(), status_code=status.HTTP_201_CREATED, media_type="application/json")


@router.post("/{run_id}/subflow_runs", status_code=status.HTTP_201_CREATED, response_model=schemas.DirectFlowRun)
def create_subflow_run(run_id: uuid.UUID, body: schemas.SubflowRunCreate, ctx: Ctx) -> Response:
    """A flow called inside run ``run_id`` by that run's program: a direct run of its own (as
    ``POST /api/flow_runs``), a subflow run whose ``parent_task_run_id`` is the task run standing for
    the call in the caller's run. The caller's own key may create it, as it reports its run."""
    return _created_direct_run(ctx, body, run_id)


@router.get("")
def list_flow_runs(
    ctx: Ctx,
    request: Request,
    response: Response,
    deployment_id: uuid.UUID | None = None,
    state: list[StateType] = Query(default_factory=new_list),
    state_name: list[str] = Query(default_factory=new_list, description="State names, e.g. Late (exact)."),
    name: str | None = Query(None, max_length=255, description="The run's name, e.g. brave-otter."),
    tag: list[str] = Query(default_factory=new_list),
    work_pool_name: str | None = None,
    cursor: str | None = paging.CURSOR,
    offset: int = Query(0, ge=0, le=schemas.INT64_MAX, description=paging.OFFSET_HELP),
    limit: int = Query(50, ge=1, le=1000),
) -> schemas.FlowRunPage:
    """Runs, newest expected start first (ties by id). ``state`` (types) and ``state_name``
    (names) add up: ``state=FAILED&state_name=Late`` lists the failed runs and the late ones.
    ``next`` (also the ``Link`` header) is the cursor of the next page; ``total`` counts the
    matches up to 1000 (``total_capped`` when there are more)."""
    statement = flow_runs.query(deployment_id=deployment_id, name=name, tags=tag, pool=work_pool_name,
                                dialect=ctx.dialect)
    either = flow_runs.in_states(state, state_name)  # several states: one index walk each
    with ctx.sessions() as session:
        rows, after = flow_runs.page(session, statement, limit, cursor=cursor, offset=offset, either=either)
        total, capped = flow_runs.count(session, statement, either=either)
        items = [flow_runs.to_schema(r) for r in rows]
    paging.link_next(request, response, after)
    return schemas.FlowRunPage(items=items, total=total, total_capped=capped, offset=offset, limit=limit, next=after)


@router.get("/{run_id}")
def read_flow_run(run_id: uuid.UUID, ctx: Ctx) -> schemas.FlowRun:
    with ctx.sessions() as session:
        return flow_runs.to_schema(flow_runs.get(session, run_id), session)


@router.get("/{run_id}/relatives")
def read_flow_run_relatives(run_id: uuid.UUID, ctx: Ctx) -> schemas.FlowRunRelatives:
    """Subflows, as in Prefect: the run that called this one (its ``parent_task_run_id``'s run) and
    the subflow runs it called, oldest first."""
    with ctx.sessions() as session:
        run, parent, children, capped = subflows.relatives(session, run_id)
        return schemas.FlowRunRelatives(
            parent_task_run_id=run.parent_task_run_id, parent=parent and flow_runs.to_schema(parent, session),
            children=[flow_runs.to_schema(child, session) for child in children], children_capped=capped)


@router.get("/{run_id}/waiting_reason")
def read_waiting_reason(run_id: uuid.UUID, ctx: Ctx) -> schemas.WaitingReason:
    """Why a run that has not started (SCHEDULED or PENDING) has not started yet: each cause with a
    code and a message (no online worker, a paused pool or queue, a full concurrency limit, a time
    still ahead...), and ``reason``, one sentence for people. Started and final runs have none."""
    with ctx.sessions() as session:
        return waiting.explain(session, run_id, heartbeat_seconds=ctx.settings.worker_heartbeat_seconds,
                               late_after_seconds=ctx.settings.scheduler_late_after_seconds)


@router.get("/{run_id}/wait")
async def wait_for_flow_run(
    run_id: uuid.UUID, ctx: Ctx, timeout: float = Query(30.0, ge=0, le=300)
) -> schemas.FlowRun:
    """Answer as soon as the run is in a final state, or after ``timeout`` seconds with the run as
    it is then. Clients loop on this instead of polling."""
    def read() -> schemas.FlowRun:
        with ctx.sessions() as session:
            return flow_runs.to_schema(flow_runs.get(session, run_id), session)

    return await long_poll(ctx.notifier, run_id, read, lambda run: run.state.type in FINAL_STATES, timeout)


@router.get("/{run_id}/states")
def read_flow_run_states(run_id: uuid.UUID, ctx: Ctx) -> list[schemas.State]:
    with ctx.sessions() as session:
        return [
            schemas.State(type=s.type, name=s.name, message=s.message, timestamp=s.timestamp)
            for s in flow_runs.history(session, run_id)
        ]


@router.post("/{run_id}/state", status_code=status.HTTP_201_CREATED, response_model=schemas.FlowRun)
def set_flow_run_state(run_id: uuid.UUID, body: schemas.StateCreate, ctx: Ctx,
                       infrastructure_id: str | None = Query(None, min_length=1,
                                                             max_length=INFRASTRUCTURE_ID_MAX)) -> Response:
    """Report a state. 409 when the run's current state does not allow it. ``infrastructure_id``
    (with RUNNING): where the reporting process runs, as its heartbeat would say it. A query
    parameter, not a body field: a server without it ignores it (and the process's next beat says it)."""
    with ctx.transaction() as session:
        run = flow_runs.set_state(session, run_id, body, infrastructure_id=infrastructure_id)
        left = flow_runs.left_state(session, run_id)  # the state before: for the PENDING -> RUNNING latency
        out = flow_runs.to_schema(run, session)
        announced = events.take_announcement(session)  # the state's event: announced with the run, below
    if left is not None and left[0] == StateType.PENDING and run.state_type == StateType.RUNNING:
        ctx.latencies.started(run.work_pool_name, left[1], run.state_timestamp)
    ctx.state_changed(run, *announced)
    return _answer(out, status.HTTP_201_CREATED)


@router.post("/{run_id}/cancel", response_model=schemas.FlowRun)
def cancel_flow_run(run_id: uuid.UUID, ctx: Ctx) -> Response:
    with ctx.transaction() as session:
        run = flow_runs.cancel(session, run_id)
        out = flow_runs.to_schema(run, session)
        announced = events.take_announcement(session)
    ctx.state_changed(run, *announced)
    return _answer(out)


@router.post("/{run_id}/claim", response_model=schemas.Claim)
def claim_flow_run(run_id: uuid.UUID, body: schemas.ClaimRequest, ctx: Ctx) -> Response:
    """A worker takes a due run: SCHEDULED -> PENDING, exactly one claimant wins (others get 409).
    409 too when the pool is paused or a concurrency limit is reached (the run waits)."""
    with ctx.transaction() as session:
        out = claims.claim(session, run_id, body.worker_name, pool=body.pool)
        if isinstance(out, claims.Claimed) and ctx.gate.enabled():
            out.answer.api_key = api_keys.create_run_key(session, run_id)
        announced = events.take_announcement(session)
    if isinstance(out, claims.Refused):  # committed un-published: the dispatchers plan it again
        ctx.claim_refused()  # (a refusal records no event: nothing announced is dropped)
        raise out.error
    run = out.run
    ctx.latencies.claimed(run.work_pool_name, run.expected_start_time, run.state_timestamp)
    ctx.state_changed(run, *announced)
    return _answer(out.answer)


def _answer(out: schemas.FlowRun | schemas.Claim, status_code: int = status.HTTP_200_OK) -> Response:
    """The model built and checked by the route: serialized once, not validated again by FastAPI
    (the routes every run passes through; as the create-run route does)."""
    return Response(out.model_dump_json(), status_code=status_code, media_type="application/json")


@router.post("/{run_id}/heartbeat", response_model=schemas.FlowRun)
async def flow_run_heartbeat(run_id: uuid.UUID, ctx: Ctx, request: Request,
                             hold: float = Query(0.0, ge=0, le=300),
                             infrastructure_id: str | None = Query(None, min_length=1,
                                                                   max_length=INFRASTRUCTURE_ID_MAX),
                             opening: bool = Query(False)) -> Any:
    """The flow-run process is alive; the answer tells it the run's current state.

    With ``hold``, the request stays open that long before answering: the flow-run process's
    connection lease. A process that drops it (it died: its kernel closed the connection) is
    judged silent within seconds, not after three heartbeats (``services/leases.py``).
    ``infrastructure_id``: where the process runs, kept if the run has none yet (what a worker's
    ``/infrastructure`` report says; a process worker's forked flow-run process says it itself).

    ``opening`` (with ``hold``): the lease's first beat, sent by a flow-run process as it starts,
    before its RUNNING report, which writes the run's heartbeat and where it runs. Nothing is read
    or written before the hold then: a PENDING run's beat would write nothing (``heartbeat``) and
    its answer is the one read after the hold. So the beat that lands while the process works
    towards RUNNING costs the server no thread, statement or commit, and its core stays the
    process's (bench/RESULTS.md, issue 22, branch h2)."""

    def beat() -> schemas.FlowRun:  # one statement, or a read and one write: no transaction needed
        with ctx.single_write() as session:
            return flow_runs.to_schema(flow_runs.heartbeat(session, run_id, infrastructure_id=infrastructure_id),
                                       session)

    def read() -> schemas.FlowRun:
        with ctx.single_write() as session:  # one read: no BEGIN nor ROLLBACK round trip
            return flow_runs.to_schema(flow_runs.get(session, run_id), session)

    out: schemas.FlowRun | Response = Response(status_code=status.HTTP_204_NO_CONTENT)  # read by nobody
    if not (opening and hold):
        out = await ctx.record_beat(beat)  # refused, or late, it is told to the reapers
    if not hold:
        return out
    try:
        await notify.hold(request, hold)
    except notify.ClientGone:
        await run_in_threadpool(ctx.client_gone, leases.RunHolder(run_id))
        return out  # nobody reads it
    return await ctx.record_beat(read)  # failing, the client sends its beat again


@router.post("/{run_id}/infrastructure")
def report_infrastructure(run_id: uuid.UUID, body: schemas.InfrastructureReport, ctx: Ctx) -> schemas.FlowRun:
    with ctx.single_write() as session:  # one UPDATE ... RETURNING: its own transaction
        return flow_runs.to_schema(flow_runs.set_infrastructure(session, run_id, body.infrastructure_id), session)


@router.post("/{run_id}/logs", status_code=status.HTTP_201_CREATED)
def write_logs(run_id: uuid.UUID, body: list[schemas.LogCreate], ctx: Ctx) -> dict[str, int]:
    with ctx.transaction() as session:
        return {"written": flow_runs.add_logs(session, run_id, body)}


@router.get("/{run_id}/logs")
def read_logs(
    run_id: uuid.UUID, ctx: Ctx, after: int = Query(0, ge=0, le=schemas.INT64_MAX),
    limit: int = Query(1000, ge=1, le=10000),
) -> list[schemas.Log]:
    """Logs in order; pass the last ``id`` seen as ``after`` to read on."""
    with ctx.sessions() as session:
        return [schemas.Log.model_validate(log) for log in flow_runs.read_logs(session, run_id, after=after, limit=limit)]


# The routes every run passes through once more, for the head of the app's route table (``api/app.py``,
# after the create-run route): FastAPI tries routes in order, and in their place (the 10th router)
# matching each cost ~100 µs a request, 11-17 µs there (bench/RESULTS.md, issue 22, branch h5). Out of
# the OpenAPI document, which shows them in their place above.
first = included.router(prefix="/flow_runs", tags=["flow runs"])
first.add_api_route("/{run_id}/claim", claim_flow_run, methods=["POST"], response_model=schemas.Claim,
                    include_in_schema=False)
first.add_api_route("/{run_id}/state", set_flow_run_state, methods=["POST"], status_code=status.HTTP_201_CREATED,
                    response_model=schemas.FlowRun, include_in_schema=False)
first.add_api_route("/{run_id}/heartbeat", flow_run_heartbeat, methods=["POST"], response_model=schemas.FlowRun,
                    include_in_schema=False)
first.add_api_route("/{run_id}/infrastructure", report_infrastructure, methods=["POST"], include_in_schema=False)
