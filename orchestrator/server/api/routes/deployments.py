import uuid

from fastapi import Query, Request, Response, status

from orchestrator import schemas
from orchestrator.server.api import included, paging
from orchestrator.server.api.audit import KeyFingerprint
from orchestrator.server.api.context import Ctx
from orchestrator.server.api.routes.flow_runs import publish_and_notify
from orchestrator.server.services import deployments, events, flow_runs, job_preview

router = included.router(prefix="/deployments", tags=["deployments"])


@router.post("", status_code=status.HTTP_201_CREATED)
def upsert_deployment(body: schemas.DeploymentCreate, response: Response, ctx: Ctx,
                      key: KeyFingerprint) -> schemas.Deployment:
    """Create a deployment, or update the one with the same flow and name (200)."""
    with ctx.transaction() as session:
        deployment, created = deployments.upsert(session, body, api_key_fingerprint=key)
        out = deployments.to_schema(session, deployment)
    ctx.runs_due()  # a changed concurrency limit may let waiting runs go
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("")
def list_deployments(
    ctx: Ctx,
    request: Request,
    response: Response,
    flow_name: str | None = None,
    work_pool_name: str | None = None,
    tag: str | None = None,
    cursor: str | None = paging.CURSOR,
    offset: int = Query(0, ge=0, le=schemas.INT64_MAX, description=paging.OFFSET_HELP),
    limit: int = Query(200, ge=1, le=1000),
) -> list[schemas.Deployment]:
    """Deployments by flow name and name; the ``Link`` header's rel="next" reads on."""
    with ctx.sessions() as session:
        rows, after = deployments.page(session, flow_name=flow_name, pool=work_pool_name, tag=tag, cursor=cursor,
                                       offset=offset, limit=limit)
        out = [deployments.to_schema(session, d) for d in rows]
    paging.link_next(request, response, after)
    return out


@router.get("/name/{flow_name}/{deployment_name}")
def read_deployment_by_name(flow_name: str, deployment_name: str, ctx: Ctx) -> schemas.Deployment:
    with ctx.sessions() as session:
        return deployments.to_schema(session, deployments.get_by_name(session, flow_name, deployment_name))


@router.get("/{deployment_id}")
def read_deployment(deployment_id: uuid.UUID, ctx: Ctx) -> schemas.Deployment:
    with ctx.sessions() as session:
        return deployments.to_schema(session, deployments.get(session, deployment_id))


@router.get("/{deployment_id}/job_preview")
def preview_job(deployment_id: uuid.UUID, ctx: Ctx) -> schemas.JobPreview:
    """The job a run of this deployment would get: the pool's base job template rendered with its
    defaults and the deployment's job variables, as the worker renders it; secret values masked."""
    with ctx.sessions() as session:
        return job_preview.preview(session, deployment_id)


@router.patch("/{deployment_id}")
def update_deployment(deployment_id: uuid.UUID, body: schemas.DeploymentUpdate, ctx: Ctx,
                      key: KeyFingerprint) -> schemas.Deployment:
    with ctx.transaction() as session:
        out = deployments.to_schema(session, deployments.update(session, deployment_id, body, api_key_fingerprint=key))
    ctx.runs_due()  # a changed concurrency limit may let waiting runs go
    return out


@router.delete("/{deployment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_deployment(deployment_id: uuid.UUID, ctx: Ctx) -> None:
    with ctx.transaction() as session:
        deployments.delete(session, deployment_id)


@router.post("/{deployment_id}/pause")
def pause_deployment(deployment_id: uuid.UUID, ctx: Ctx, key: KeyFingerprint) -> schemas.Deployment:
    with ctx.transaction() as session:
        return deployments.to_schema(session, deployments.update(
            session, deployment_id, schemas.DeploymentUpdate(paused=True), api_key_fingerprint=key))


@router.post("/{deployment_id}/resume")
def resume_deployment(deployment_id: uuid.UUID, ctx: Ctx, key: KeyFingerprint) -> schemas.Deployment:
    with ctx.transaction() as session:
        return deployments.to_schema(session, deployments.update(
            session, deployment_id, schemas.DeploymentUpdate(paused=False), api_key_fingerprint=key))


@router.post("/{deployment_id}/runs", status_code=status.HTTP_201_CREATED, response_model=schemas.FlowRun)
def create_flow_run(deployment_id: uuid.UUID, body: schemas.FlowRunCreate, ctx: Ctx) -> Response:
    """Create a run. 201 with the new run; 200 with the existing one for a repeated idempotency key."""
    with ctx.one_write() as session:  # the run, its state and its event: one INSERT (``flow_runs.create``)
        run, created = flow_runs.create(session, deployment_id, body, publish=True,
                                         groups=ctx.run_groups)
        # The answer serialized here, not validated again by FastAPI (the API's busiest route); a run
        # just written straight from its values (``created_json``: the model's bytes).
        answer = (flow_runs.created_json(run, session) if created  # type: ignore[arg-type]  # a NewRun
                  else flow_runs.to_schema(run, session).model_dump_json())
        announced = events.take_announcement(session)  # the run's event: announced with the run, below
    if created:
        publish_and_notify(ctx, run, *announced)
    return Response(answer, status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
                    media_type="application/json")


# The create-run route once more, for the head of the app's route table (``api/app.py``): FastAPI
# tries routes in order, and in its place (the 7th router, the 11th route of this one, its router
# matched twice) finding it cost ~60 µs a create, against ~6 µs first (bench/RESULTS.md, issue 22).
# Out of the OpenAPI document, which shows the route in its place above.
first = included.router(prefix="/deployments", tags=["deployments"])
first.add_api_route("/{deployment_id}/runs", create_flow_run, methods=["POST"], status_code=status.HTTP_201_CREATED,
                    response_model=schemas.FlowRun, include_in_schema=False)
