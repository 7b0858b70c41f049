"""Deployments on the wire."""

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from orchestrator.schemas.base import (
    DEFERRED,
    INT32_MAX,
    CatchupPolicy,
    CollisionStrategy,
    InModel,
    Name,
    OutModel,
    new_dict,
    new_list,
)
from orchestrator.schemas.schedules import DeploymentSchedule, ScheduleCreate


class DeploymentCreate(InModel):
    flow_name: Name
    name: Name
    entrypoint: str = Field(min_length=1, description="path/to/file.py:function or package.module:function")
    path: str | None = None
    parameters: dict[str, Any] = Field(default_factory=new_dict)
    parameter_openapi_schema: dict[str, Any] = Field(default_factory=new_dict)
    enforce_parameter_schema: bool = True
    schedules: list[ScheduleCreate] = Field(default_factory=new_list)
    paused: bool = False
    triggers: list[dict[str, Any]] = Field(default_factory=new_list)
    version: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=new_list)
    work_pool_name: str = Field(min_length=1)
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=new_dict)
    pull_steps: list[dict[str, Any]] = Field(default_factory=new_list)
    concurrency_limit: int | None = Field(None, ge=1, le=INT32_MAX)
    concurrency_collision_strategy: CollisionStrategy = "ENQUEUE"
    crash_retries: int = Field(0, ge=0, le=100)
    catchup: CatchupPolicy = Field("ALL", description="After downtime, run ALL missed runs, the LATEST or NONE.")
    max_late_runs: int | None = Field(None, ge=1, le=INT32_MAX, description="Cap on Late auto-scheduled runs waiting.")


class ConcurrencyOptions(InModel):
    """Prefect's ``ConcurrencyLimitConfig``: ``{"limit": 2, "collision_strategy": "CANCEL_NEW"}``."""

    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    limit: int = Field(ge=1, le=INT32_MAX)
    collision_strategy: CollisionStrategy = "ENQUEUE"


def concurrency_fields(value: int | dict[str, Any] | ConcurrencyOptions | None) -> dict[str, Any]:
    """Deployment fields for a concurrency limit given as a number or as options."""
    if value is None:
        return {"concurrency_limit": None}
    if isinstance(value, int):
        return {"concurrency_limit": value}
    options = value if isinstance(value, ConcurrencyOptions) else ConcurrencyOptions.model_validate(value)
    return {"concurrency_limit": options.limit, "concurrency_collision_strategy": options.collision_strategy}


class DeploymentUpdate(InModel):
    entrypoint: str | None = None
    path: str | None = None
    parameters: dict[str, Any] | None = None
    parameter_openapi_schema: dict[str, Any] | None = None
    enforce_parameter_schema: bool | None = None
    schedules: list[ScheduleCreate] | None = None
    paused: bool | None = None
    triggers: list[dict[str, Any]] | None = None
    version: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    job_variables: dict[str, Any] | None = None
    pull_steps: list[dict[str, Any]] | None = None
    concurrency_limit: int | None = Field(None, ge=1, le=INT32_MAX)
    concurrency_collision_strategy: CollisionStrategy | None = None
    crash_retries: int | None = Field(None, ge=0, le=100)
    catchup: CatchupPolicy | None = None
    max_late_runs: int | None = Field(None, ge=1, le=INT32_MAX)


class Deployment(OutModel):
    id: uuid.UUID
    flow_id: uuid.UUID
    flow_name: str
    name: str
    entrypoint: str
    path: str | None
    parameters: dict[str, Any]
    parameter_openapi_schema: dict[str, Any]
    enforce_parameter_schema: bool
    schedules: list[DeploymentSchedule]
    paused: bool
    triggers: list[dict[str, Any]]
    version: str | None
    description: str | None
    tags: list[str]
    work_pool_name: str
    work_queue_name: str | None
    job_variables: dict[str, Any]
    pull_steps: list[dict[str, Any]]
    concurrency_limit: int | None
    concurrency_collision_strategy: CollisionStrategy
    crash_retries: int
    catchup: CatchupPolicy = "ALL"
    max_late_runs: int | None = None
    created: dt.datetime
    updated: dt.datetime

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


class JobPreview(OutModel):
    """``GET /api/deployments/{id}/job_preview``: the job a run of this deployment would get, as
    the worker renders it (pool template < deployment job variables), secret values masked;
    ``{{ $NAME }}`` placeholders (the worker's environment) show as ``${NAME}``."""

    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    deployment_id: uuid.UUID
    work_pool_name: str
    work_pool_type: str
    job_variables: dict[str, Any]  # the values rendered: the template's defaults, then the deployment's
    job: dict[str, Any]

