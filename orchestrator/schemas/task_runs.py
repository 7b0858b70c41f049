"""Task runs and deployment history on the wire."""

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from orchestrator.schemas.base import INT32_MAX, InModel, Instant, OutModel, new_list
from orchestrator.states import StateType


class TaskRunWrite(InModel):
    """One task run as the flow-run process last saw it. Sent again at every change; the id is
    the process's, so a repeated or later report of the same run updates it."""

    id: uuid.UUID
    name: str = Field(min_length=1, max_length=255)
    task_name: str = Field(min_length=1, max_length=255)
    version: str | None = Field(None, max_length=255)
    tags: list[str] = Field(default_factory=new_list)
    state_type: StateType
    state_name: str = Field(min_length=1, max_length=64)
    state_message: str | None = None
    run_count: int = Field(0, ge=0, le=INT32_MAX)
    max_retries: int = Field(0, ge=0, le=INT32_MAX)
    start_time: Instant | None = None
    end_time: Instant | None = None
    created: Instant


class TaskRun(OutModel):
    id: uuid.UUID
    flow_run_id: uuid.UUID | None  # None: a task called outside any flow
    name: str
    task_name: str
    version: str | None
    tags: list[str]
    state_type: StateType
    state_name: str
    state_message: str | None
    run_count: int
    max_retries: int
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    created: dt.datetime
    updated: dt.datetime


class DeploymentVersion(OutModel):
    """One change of a deployment: ``changes`` maps each changed field to ``{"from", "to"}``."""

    id: int
    deployment_id: uuid.UUID
    action: str
    version: str | None
    changes: dict[str, Any]
    api_key_fingerprint: str | None
    created: dt.datetime
