"""Wire models of the REST API: ``XCreate`` / ``XUpdate`` come in, ``X`` goes out.

Shared by the server and the client, so both sides agree on every field. One module per resource;
``base`` holds what they share (input models refuse what the database cannot hold).

Each name is imported from its module at its first use (PEP 562), so a process loads, and pydantic
builds the validators of, only the resources it reads: the fork server every flow run is forked from
holds no work-pool models."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        DirectFlowRun,
        DirectFlowRunCreate,
        FlowRun,
        FlowRunCreate,
        FlowRunPage,
        FlowRunRelatives,
        InfrastructureReport,
        Log,
        LogCreate,
        State,
        StateCreate,
        SubflowRunCreate,
        WaitingCause,
        WaitingReason,
    )
    from orchestrator.schemas.flows import Flow
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

# Which module defines each name served here: the names imported above for type checkers, and ``__all__``.
_MODULE_NAMES = {
    "base": (
        "INT32_MAX", "INT64_MAX", "NAME_PATTERN", "SLUG_PATTERN", "CatchupPolicy", "CollisionStrategy",
        "InModel", "Instant", "Name", "OutModel", "name_problem"
    ),
    "broker": ("BrokerInfo",),
    "deployments": (
        "ConcurrencyOptions", "Deployment", "DeploymentCreate", "DeploymentUpdate", "JobPreview",
        "concurrency_fields"
    ),
    "flow_runs": (
        "Claim", "ClaimRequest", "DirectFlowRun", "DirectFlowRunCreate", "FlowRun", "FlowRunCreate", "FlowRunPage", "FlowRunRelatives", "InfrastructureReport", "Log",
        "LogCreate", "State", "StateCreate", "SubflowRunCreate", "WaitingCause", "WaitingReason"
    ),
    "flows": ("Flow",),
    "schedules": (
        "TIMING_FIELDS", "BackfillRequest", "BackfillResult", "DeploymentSchedule", "ScheduleCreate",
        "ScheduleUpdate"
    ),
    "task_runs": ("DeploymentVersion", "TaskRun", "TaskRunWrite"),
    "work_pools": (
        "Worker", "WorkerHeartbeat", "WorkPool", "WorkPoolCreate", "WorkPoolUpdate", "WorkQueue",
        "WorkQueueCreate", "WorkQueueUpdate"
    ),
}
_HOMES = {name: module for module, names in _MODULE_NAMES.items() for name in names}
__all__ = [
    "INT32_MAX", "INT64_MAX", "NAME_PATTERN", "Name", "name_problem", "SLUG_PATTERN", "TIMING_FIELDS",
    "BackfillRequest", "BackfillResult", "BrokerInfo", "CatchupPolicy", "Claim", "ClaimRequest", "CollisionStrategy",
    "ConcurrencyOptions", "Deployment", "DeploymentCreate", "DeploymentSchedule", "DeploymentUpdate",
    "DeploymentVersion", "DirectFlowRun", "DirectFlowRunCreate", "Flow", "FlowRun",
    "FlowRunCreate", "FlowRunPage", "FlowRunRelatives", "InModel", "InfrastructureReport", "Instant", "JobPreview", "Log", "LogCreate", "OutModel",
    "ScheduleCreate", "ScheduleUpdate", "State", "StateCreate", "SubflowRunCreate", "TaskRun", "TaskRunWrite", "WorkPool",
    "WorkPoolCreate", "WorkPoolUpdate",
    "WorkQueue", "WorkQueueCreate", "WorkQueueUpdate", "Worker", "WorkerHeartbeat", "concurrency_fields",
    "WaitingCause", "WaitingReason",
]


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # found at once from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
