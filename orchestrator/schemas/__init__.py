"""Wire models of the REST API: ``XCreate`` / ``XUpdate`` come in, ``X`` goes out.

Shared by the server and the client, so both sides agree on every field. One module per resource;
``base`` holds what they share (input models refuse what the database cannot hold)."""

from orchestrator.schemas.base import (
    INT32_MAX,
    INT64_MAX,
    NAME_PATTERN,
    SLUG_PATTERN,
    CatchupPolicy,
    CollisionStrategy,
    InModel,
    Instant,
    Name,
    OutModel,
    name_problem,
)
from orchestrator.schemas.broker import BrokerInfo
from orchestrator.schemas.deployments import (
    ConcurrencyOptions,
    Deployment,
    DeploymentCreate,
    DeploymentUpdate,
    JobPreview,
    concurrency_fields,
)
from orchestrator.schemas.flow_runs import (
    Claim,
    ClaimRequest,
    FlowRun,
    FlowRunCreate,
    FlowRunPage,
    InfrastructureReport,
    Log,
    LogCreate,
    State,
    StateCreate,
    WaitingCause,
    WaitingReason,
)
from orchestrator.schemas.schedules import (
    TIMING_FIELDS,
    BackfillRequest,
    BackfillResult,
    DeploymentSchedule,
    ScheduleCreate,
    ScheduleUpdate,
)
from orchestrator.schemas.task_runs import DeploymentVersion, TaskRun, TaskRunWrite
from orchestrator.schemas.work_pools import (
    Worker,
    WorkerHeartbeat,
    WorkPool,
    WorkPoolCreate,
    WorkPoolUpdate,
    WorkQueue,
    WorkQueueCreate,
    WorkQueueUpdate,
)

__all__ = [
    "INT32_MAX", "INT64_MAX", "NAME_PATTERN", "Name", "name_problem", "SLUG_PATTERN", "TIMING_FIELDS",
    "BackfillRequest", "BackfillResult", "BrokerInfo", "CatchupPolicy", "Claim", "ClaimRequest", "CollisionStrategy",
    "ConcurrencyOptions", "Deployment", "DeploymentCreate", "DeploymentSchedule", "DeploymentUpdate",
    "DeploymentVersion", "FlowRun",
    "FlowRunCreate", "FlowRunPage", "InModel", "InfrastructureReport", "Instant", "JobPreview", "Log", "LogCreate", "OutModel",
    "ScheduleCreate", "ScheduleUpdate", "State", "StateCreate", "TaskRun", "TaskRunWrite", "WorkPool",
    "WorkPoolCreate", "WorkPoolUpdate",
    "WorkQueue", "WorkQueueCreate", "WorkQueueUpdate", "Worker", "WorkerHeartbeat", "concurrency_fields",
    "WaitingCause", "WaitingReason",
]
