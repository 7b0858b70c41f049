"""Flow runs, their states, claims and logs on the wire."""

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from orchestrator.schemas.base import DEFERRED, INT32_MAX, InModel, Instant, OutModel, new_dict, new_list
from orchestrator.schemas.deployments import Deployment
from orchestrator.states import FINAL_STATES, StateType


class FlowRunCreate(InModel):
    parameters: dict[str, Any] = Field(default_factory=new_dict)
    job_variables: dict[str, Any] = Field(default_factory=new_dict)
    tags: list[str] = Field(default_factory=new_list)
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


class State(OutModel):
    type: StateType
    name: str
    message: str | None = None
    timestamp: dt.datetime

    @property
    def is_final(self) -> bool:
        return self.type in FINAL_STATES


class StateCreate(InModel):
    type: StateType
    name: str | None = Field(None, max_length=64)
    message: str | None = None
    result: Any = None
    scheduled_time: Instant | None = Field(None, description="For SCHEDULED (AwaitingRetry): when to run again.")
    worker_name: str | None = Field(
        None, description="Reporter's claim: the report only applies while this worker holds the run."
    )
    flow_version: str | None = Field(None, max_length=255,
                                     description="With RUNNING: the version of the flow the process loaded.")
    flow_run_name: str | None = Field(None, min_length=1, max_length=255,
                                      description="With RUNNING: the run's name from the flow's flow_run_name.")


class FlowRun(OutModel):
    id: uuid.UUID
    name: str
    flow_id: uuid.UUID
    deployment_id: uuid.UUID | None
    deployment_version: str | None
    flow_version: str | None = None
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
    """A page of runs. ``next`` is the cursor of the next page (None: this is the last); ``total``
    counts the matches up to 1000 (``total_capped``: there are more), never the whole history."""

    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    items: list[FlowRun]
    total: int
    total_capped: bool = False
    offset: int
    limit: int
    next: str | None = None


class DirectFlowRunCreate(InModel):
    """A run of a flow its own program calls directly (no deployment): ``POST /api/flow_runs``.
    The program runs it at once: it is created RUNNING, for that program to report on and
    heartbeat; no worker ever claims it."""

    flow_name: str = Field(min_length=1, max_length=255, description="The flow's name; the flow is created if new.")
    name: str | None = Field(None, min_length=1, max_length=255, description="The run's name; a random one if left out.")
    parameters: dict[str, Any] = Field(default_factory=new_dict)
    tags: list[str] = Field(default_factory=new_list)
    flow_version: str | None = Field(None, max_length=255, description="The version of the flow the program runs.")


class SubflowRunCreate(DirectFlowRunCreate):
    """A flow called inside a tracked run (``POST /api/flow_runs/{id}/subflow_runs``): a direct run
    of its own, related to its caller's run through the task run standing for the call there."""

    parent_task_run_id: uuid.UUID = Field(description="The task run that stands for the call in the caller's run.")


class DirectFlowRun(BaseModel):
    """A flow run created by its own program, and the run's own key for that program's reports
    (None on an open server), as a claim gives a flow-run process its run's key."""

    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    flow_run: FlowRun
    api_key: str | None = None


class ClaimRequest(InModel):
    worker_name: str = Field(min_length=1)
    pool: str | None = Field(None, description="The claiming worker's pool; a run of another pool is refused.")


class Claim(BaseModel):
    """What a worker needs to start a run it has won."""

    flow_run: FlowRun
    deployment: Deployment
    base_job_template: dict[str, Any]
    # The run's own API key, for its flow-run process instead of the worker's (None on an open
    # server): it may only report and read this run (docs/security.md).
    api_key: str | None = None


# Where a run's process runs (``process:<host>:<pid>``, a container's or a Job's name): its column's width.
INFRASTRUCTURE_ID_MAX = 255


class InfrastructureReport(InModel):
    infrastructure_id: str = Field(min_length=1, max_length=INFRASTRUCTURE_ID_MAX)


class LogCreate(InModel):
    timestamp: Instant
    level: int = Field(20, ge=0, le=INT32_MAX)
    name: str = "flow_run"
    message: str


class Log(OutModel):
    id: int
    flow_run_id: uuid.UUID
    timestamp: dt.datetime
    level: int
    name: str
    message: str


class WaitingCause(OutModel):
    """One reason a run has not started, e.g. ``{"code": "NO_WORKER", "message": "pool 'local' has
    no online worker ..."}``. Codes: SCHEDULED_LATER, AWAITING_RETRY, DEPLOYMENT_DELETED, POOL_MISSING,
    POOL_PAUSED, QUEUE_MISSING, QUEUE_PAUSED, NO_WORKER, CONCURRENCY_LIMIT, DISPATCHING, NOT_CLAIMED,
    STARTING."""

    code: str
    message: str


class WaitingReason(OutModel):
    """``GET /api/flow_runs/{id}/waiting_reason``: why a run that has not started (SCHEDULED or
    PENDING) has not started yet; ``reason`` is None once it started or ended."""

    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    flow_run_id: uuid.UUID
    state: State
    late_seconds: float | None = Field(None, description="How long past its expected start time a SCHEDULED run is.")
    causes: list[WaitingCause] = Field(default_factory=new_list)
    reason: str | None = Field(None, description="The causes as one sentence, for people.")


class FlowRunRelatives(BaseModel):
    """A run's place among subflows (``GET /api/flow_runs/{id}/relatives``): the run that called it
    (None: not a subflow run, or its caller's task run is not recorded yet) and the subflow runs it
    called, oldest first (``children_capped``: there are more than those listed)."""

    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    parent_task_run_id: uuid.UUID | None = None
    parent: FlowRun | None = None
    children: list[FlowRun] = Field(default_factory=new_list)
    children_capped: bool = False
