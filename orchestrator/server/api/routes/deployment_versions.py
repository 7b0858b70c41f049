"""A deployment's history, ``GET /api/deployments/{id}/versions``: one entry per change."""

import uuid

from fastapi import Query, Request, Response

from orchestrator import schemas
from orchestrator.server.api import included, paging
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import deployment_history, deployments

router = included.router(prefix="/deployments/{deployment_id}/versions", tags=["deployments"])


@router.get("")
def read_deployment_versions(deployment_id: uuid.UUID, ctx: Ctx, request: Request, response: Response,
                             cursor: str | None = paging.CURSOR,
                             offset: int = Query(0, ge=0, le=schemas.INT64_MAX, description=paging.OFFSET_HELP),
                             limit: int = Query(200, ge=1, le=1000)) -> list[schemas.DeploymentVersion]:
    """Every change of the deployment, oldest first: the fields changed (from -> to), when, and a
    fingerprint of the API key that made it (null on an open server). The ``Link`` header's
    rel="next" reads on."""
    with ctx.sessions() as session:
        deployments.get(session, deployment_id)
        rows, after = deployment_history.page(session, deployment_id, cursor=cursor, offset=offset, limit=limit)
        out = [schemas.DeploymentVersion.model_validate(row) for row in rows]
    paging.link_next(request, response, after)
    return out
