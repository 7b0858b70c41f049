"""Wire models of the REST API: ``XCreate`` / ``XUpdate`` come in, ``X`` goes out.

Shared by the server and the client, so both sides agree on every field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator import storable
from orchestrator.states import FINAL_STATES, StateType

NAME_PATTERN = r"^[^/%&><]+$"
CollisionStrategy = Literal["ENQUEUE", "CANCEL_NEW"]
CatchupPolicy = Literal["ALL", "LATEST", "NONE"]
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# The largest numbers the database's columns hold: a larger one is a 422 naming the field, not a
# database error. INTEGER columns (limits, priorities, log levels) have 32 bits on PostgreSQL.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1  # offsets and log ids


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Instants are stored in UTC. A naive one is read as UTC, as Prefect's API reads it; one with no
    UTC equivalent (year 1 at +05:00) is refused here instead of overflowing in the database layer."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "date-time out of range once converted to UTC") from None


Instant = Annotated[dt.datetime, AfterValidator(_as_utc)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        why = storable.problem(value)
        if why is not None:
            raise PydanticCustomError("unstorable", why)
        return value


# --- schedules ---------------------------------------------------------------------------------

_TIMING = ("cron", "day_or", "interval", "anchor_date", "rrule")


class ScheduleCreate(_In):
    """One schedule: exactly one of ``cron``, ``interval`` or ``rrule`` (``orchestrator.schedules``)."""

    cron: str | None = Field(None, description="Cron expression, e.g. '0 9 * * 1-5'.")
    day_or: bool | None = Field(None, description="Cron: day-of-month OR day-of-week (default) vs AND.")
    interval: float | str | None = Field(None, description="Seconds, or an ISO 8601 duration such as PT15M.")
    anchor_date: dt.datetime | None = Field(None, description="Interval: counted from here (naive: the zone's time).")
    rrule: str | None = Field(None, max_length=6500, description="RFC 5545 recurrence rule (no COUNT).")
    timezone: str | None = Field(None, description="IANA zone; default UTC (or the rrule's TZID).")
    active: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict, description="Override the deployment's parameters.")
    slug: str | None = Field(None, min_length=1, max_length=128, pattern=SLUG_PATTERN,
                             description="Unique within the deployment; default derived from the timing.")

    @model_validator(mode="before")
    @classmethod
    def _other_shapes(cls, data: Any) -> Any:
        """Also accept a schedule read back from the API (``orch deploy`` keeps the server's) and
        Prefect's nested ``{"schedule": {...}, "active": ...}``; a ``timedelta`` interval is seconds."""
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            return data
        data = dict(data)
        nested = data.pop("schedule", None)
        if isinstance(nested, dict):
            data = {**nested, **data}
        for key in ("id", "deployment_id", "created", "updated"):
            data.pop(key, None)
        if isinstance(data.get("interval"), dt.timedelta):
            data["interval"] = data["interval"].total_seconds()
        return {k: v for k, v in data.items() if not (k in _TIMING and v is None)}

    @model_validator(mode="after")
    def _valid(self) -> ScheduleCreate:
        from orchestrator.schedules import parse

        parse(self.model_dump(include={*_TIMING, "timezone"}, exclude_none=True), name=self.slug)
        return self


class ScheduleUpdate(_In):
    """Pause/resume (``active``), new parameters, or new timing (replaces the old kind)."""

    active: bool | None = None
    parameters: dict[str, Any] | None = None
    cron: str | None = None
    day_or: bool | None = None
    interval: float | str | None = None
    anchor_date: dt.datetime | None = None
    rrule: str | None = Field(None, max_length=6500)
    timezone: str | None = None


class DeploymentSchedule(_Out):
    id: uuid.UUID
    deployment_id: uuid.UUID
    slug: str
    cron: str | None = None
    day_or: bool | None = None
    interval: float | None = Field(None, description="Seconds.")
    anchor_date: dt.datetime | None = None
    rrule: str | None = None
    timezone: str
    active: bool
    parameters: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime


class BackfillRequest(_In):
    start: AwareDatetime
    end: AwareDatetime
    schedules: list[str] | None = Field(None, description="Slugs; default every active schedule.")


class BackfillResult(BaseModel):
    created: int
    existing: int


# --- deployments -------------------------------------------------------------------------------


class DeploymentCreate(_In):
    flow_name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    entrypoint: str = Field(min_length=1, description="path/to/file.py:function or package.module:function")
    path: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_openapi_schema: dict[str, Any] = Field(default_factory=dict)
    enforce_parameter_schema: bool = True
    schedules: list[ScheduleCreate] = Field(default_factory=list)
    paused: bool = False
    triggers: list[dict[str, Any]] = Field(default_factory=list)
    version: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    work_pool_name: str = Field(min_length=1)
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    pull_steps: list[dict[str, Any]] = Field(default_factory=list)
    concurrency_limit: int | None = Field(None, ge=1, le=INT32_MAX)
    concurrency_collision_strategy: CollisionStrategy = "ENQUEUE"
    crash_retries: int = Field(0, ge=0, le=100)
    catchup: CatchupPolicy = Field("ALL", description="After downtime, run ALL missed runs, the LATEST or NONE.")
    max_late_runs: int | None = Field(None, ge=1, le=INT32_MAX, description="Cap on Late auto-scheduled runs waiting.")


class ConcurrencyOptions(_In):
    """Prefect's ``ConcurrencyLimitConfig``: ``{"limit": 2, "collision_strategy": "CANCEL_NEW"}``."""

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


class DeploymentUpdate(_In):
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


class Deployment(_Out):
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


# --- flow runs ---------------------------------------------------------------------------------


class FlowRunCreate(_In):
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    scheduled_time: Instant | None = None
    idempotency_key: str | None = Field(None, max_length=255,
                                        description="Keys starting with 'scheduled:' belong to the scheduler.")
    work_queue_name: str | None = None
    enforce_parameter_schema: bool | None = Field(
        None, description="False: skip the deployment's parameter schema for this run; None: the deployment decides."
    )

    @field_validator("idempotency_key")
    @classmethod
    def _not_the_schedulers(cls, key: str | None) -> str | None:
        if key is not None and key.startswith("scheduled:"):
            raise PydanticCustomError("reserved", "idempotency keys starting with 'scheduled:' belong to the scheduler")
        return key


class State(_Out):
    type: StateType
    name: str
    message: str | None = None
    timestamp: dt.datetime

    @property
    def is_final(self) -> bool:
        return self.type in FINAL_STATES


class StateCreate(_In):
    type: StateType
    name: str | None = Field(None, max_length=64)
    message: str | None = None
    result: Any = None
    scheduled_time: Instant | None = Field(None, description="For SCHEDULED (AwaitingRetry): when to run again.")
    worker_name: str | None = Field(
        None, description="Reporter's claim: the report only applies while this worker holds the run."
    )


class FlowRun(_Out):
    id: uuid.UUID
    name: str
    flow_id: uuid.UUID
    deployment_id: uuid.UUID | None
    deployment_version: str | None
    work_pool_name: str | None
    work_queue_name: str | None
    parameters: dict[str, Any]
    job_variables: dict[str, Any]
    tags: list[str]
    idempotency_key: str | None
    state: State
    expected_start_time: dt.datetime
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    run_count: int
    result: Any = None
    worker_name: str | None
    infrastructure_id: str | None
    heartbeat_at: dt.datetime | None = None
    crash_restarts: int = 0
    created: dt.datetime


class FlowRunPage(BaseModel):
    items: list[FlowRun]
    total: int
    offset: int
    limit: int


class ClaimRequest(_In):
    worker_name: str = Field(min_length=1)
    pool: str | None = Field(None, description="The claiming worker's pool; a run of another pool is refused.")


class Claim(BaseModel):
    """What a worker needs to start a run it has won."""

    flow_run: FlowRun
    deployment: Deployment
    base_job_template: dict[str, Any]


class InfrastructureReport(_In):
    infrastructure_id: str


class LogCreate(_In):
    timestamp: Instant
    level: int = Field(20, ge=0, le=INT32_MAX)
    name: str = "flow_run"
    message: str


class Log(_Out):
    id: int
    flow_run_id: uuid.UUID
    timestamp: dt.datetime
    level: int
    name: str
    message: str


# --- work pools, queues, workers ---------------------------------------------------------------


class WorkPoolCreate(_In):
    name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    type: str = "process"
    description: str | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool = False


class WorkPoolUpdate(_In):
    description: str | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool | None = None


class WorkPool(_Out):
    id: uuid.UUID
    name: str
    type: str
    description: str | None
    base_job_template: dict[str, Any]
    concurrency_limit: int | None
    paused: bool
    default_queue_name: str
    status: str = "NOT_READY"
    created: dt.datetime


class WorkQueueCreate(_In):
    name: str = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    description: str | None = None
    priority: int = Field(1, ge=1, le=INT32_MAX)
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool = False


class WorkQueueUpdate(_In):
    description: str | None = None
    priority: int | None = Field(None, ge=1, le=INT32_MAX)
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool | None = None


class WorkQueue(_Out):
    id: uuid.UUID
    pool_name: str
    name: str
    description: str | None
    priority: int
    concurrency_limit: int | None
    paused: bool


class WorkerHeartbeat(_In):
    name: str = Field(min_length=1, max_length=255)
    running: list[uuid.UUID] = Field(default_factory=list, description="Runs whose infrastructure it watches.")


class Worker(_Out):
    id: uuid.UUID
    name: str
    pool_name: str
    last_heartbeat: dt.datetime
    status: str
