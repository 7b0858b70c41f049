"""The job a run of a deployment would get (``GET /api/deployments/{id}/job_preview``, the pool
page's preview): the pool's template rendered with its defaults and the deployment's job
variables, exactly as a worker renders it -- but from masked values, so a secret shows as
``********`` wherever the template puts it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping

from sqlalchemy.orm import Session

from job_templates.render import merge_values, render, variable_defaults
from orchestrator import schemas
from orchestrator.masking import mask_template, mask_values
from orchestrator.server.services import deployments, work_pools


class _WorkerEnviron(Mapping[str, str]):
    """``{{ $NAME }}`` reads the worker's environment, which the server does not know: shown as ``${NAME}``."""

    def __getitem__(self, name: str) -> str:
        return f"${{{name}}}"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:  # an empty mapping would be taken for "no environment given"
        return True


def preview(session: Session, deployment_id: uuid.UUID) -> schemas.JobPreview:
    deployment = deployments.get(session, deployment_id)
    pool = work_pools.get(session, deployment.work_pool_name)
    template = mask_template(pool.base_job_template or {})
    values = mask_values(template.get("variables"), deployment.job_variables or {})
    return schemas.JobPreview(
        deployment_id=deployment.id, work_pool_name=pool.name, work_pool_type=pool.type,
        job_variables=merge_values(variable_defaults(template), values),
        job=render(template, values, environ=_WorkerEnviron()))
