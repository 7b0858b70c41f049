"""Work pools, their queues and workers on the wire."""

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from orchestrator.schemas.base import INT32_MAX, InModel, Name, OutModel, new_list


class WorkPoolCreate(InModel):
    name: Name
    type: str = "process"
    description: str | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool = False


class WorkPoolUpdate(InModel):
    description: str | None = None
    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool | None = None


class WorkPool(OutModel):
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


class WorkQueueCreate(InModel):
    name: Name
    description: str | None = None
    priority: int = Field(1, ge=1, le=INT32_MAX)
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool = False


class WorkQueueUpdate(InModel):
    description: str | None = None
    priority: int | None = Field(None, ge=1, le=INT32_MAX)
    concurrency_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    paused: bool | None = None


class WorkQueue(OutModel):
    id: uuid.UUID
    pool_name: str
    name: str
    description: str | None
    priority: int
    concurrency_limit: int | None
    paused: bool


class WorkerHeartbeat(InModel):
    name: Name
    running: list[uuid.UUID] = Field(default_factory=new_list, description="Runs whose infrastructure it watches.")
    starting: bool = Field(False, description="The worker's first heartbeat: refused (409) while a worker of "
                           "the pool that is ONLINE has this name.")
    instance: uuid.UUID | None = Field(None, description=(
        "An id of the worker process, the same on each of its beats: a beat of another process under a name "
        "whose holder is ONLINE is refused (409 worker_name_taken). Without it the beats are taken as before."))


class Worker(OutModel):
    id: uuid.UUID
    name: str
    pool_name: str
    last_heartbeat: dt.datetime
    status: str
