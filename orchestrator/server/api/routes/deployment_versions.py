"""A deployment's history, ``GET /api/deployments/{id}/versions``: one entry per change."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from orchestrator import schemas
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import deployment_history, deployments

router = APIRouter(prefix="/deployments/{deployment_id}/versions", tags=["deployments"])


@router.get("")
def read_deployment_versions(deployment_id: uuid.UUID, ctx: Ctx, offset: int = Query(0, ge=0, le=schemas.INT64_MAX),
                             limit: int = Query(200, ge=1, le=1000)) -> list[schemas.DeploymentVersion]:
    """Every change of the deployment, oldest first: the fields changed (from -> to), when, and a
    fingerprint of the API key that made it (null on an open server)."""
    with ctx.sessions() as session:
        deployments.get(session, deployment_id)
        rows = deployment_history.list_(session, deployment_id, offset=offset, limit=limit)
        return [schemas.DeploymentVersion.model_validate(row) for row in rows]
