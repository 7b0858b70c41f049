"""Actions: what an automation does when it fires (``type`` says which).

Targets are ``selected`` (named in the action) or ``inferred`` (the first resource of that kind
in the triggering event: its deployment, flow run, work pool or queue). A selected target may be
named by id (Prefect's ``deployment_id``, ``work_pool_id``, ``work_queue_id``) or by name
(``deployment: flow/name``, ``work_pool_name``, ``work_pool_name`` + ``work_queue_name``); the
server resolves a name to the id when the automation is saved (an unknown one is a 422).

Strings containing ``{{`` or ``{%`` are Jinja templates, rendered in a sandbox when the action
runs: ``run-deployment`` parameters (a value that is one ``{{ ... }}`` keeps its JSON type),
``emit-event`` fields and ``call-webhook`` url, headers and body. ``job_variables`` are passed as
given, as in Prefect. Templates are checked for syntax when the automation is saved.
"""

import datetime as dt
import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from orchestrator.schemas.base import InModel, new_dict, new_list
from orchestrator.schemas.events import MAX_EVENT_NAME, MAX_RELATED, RESOURCE_ID, RESOURCE_ROLE, prefect_names
from orchestrator.schemas.templates import check_template, check_templates_within, is_template
from orchestrator.schemas.triggers import MAX_WITHIN, Duration

Source = Literal["selected", "inferred"]
Template = Annotated[str, AfterValidator(check_template)]
TemplatedJSON = Annotated[dict[str, Any], AfterValidator(check_templates_within)]
MAX_WEBHOOK_BODY = 1_000_000


def _target(action: Any, kind: str, given: list[str], how: str) -> None:
    """A selected action names its target; an inferred one must not."""
    named = [field for field in given if getattr(action, field) is not None]
    if action.source == "selected" and not named:
        raise PydanticCustomError("target", f"a selected {kind} is named by {how} (or use source: inferred, "
                                            f"the {kind} of the triggering event)")
    if action.source == "inferred" and named:
        raise PydanticCustomError("target", f"source inferred takes the {kind} from the triggering event: "
                                            f"leave out {', '.join(named)}")


class _DeploymentTarget(InModel):
    source: Source = "selected"
    deployment_id: uuid.UUID | None = None
    deployment: str | None = Field(None, min_length=3, max_length=511, description="'flow/deployment'")

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        _target(self, "deployment", ["deployment_id", "deployment"], "deployment_id or deployment ('flow/name')")
        if self.deployment is not None and self.deployment.count("/") != 1:
            raise PydanticCustomError("deployment", f"deployment {self.deployment!r} must look like 'flow/deployment'")
        return self


class RunDeployment(_DeploymentTarget):
    type: Literal["run-deployment"] = "run-deployment"
    parameters: TemplatedJSON | None = Field(None, description="None: the deployment's defaults.")
    job_variables: dict[str, Any] | None = None
    schedule_after: Duration = Field(dt.timedelta(0), ge=dt.timedelta(0), le=MAX_WITHIN)


class PauseDeployment(_DeploymentTarget):
    type: Literal["pause-deployment"] = "pause-deployment"


class ResumeDeployment(_DeploymentTarget):
    type: Literal["resume-deployment"] = "resume-deployment"


class CancelFlowRun(InModel):
    """Cancels the flow run of the triggering event (its ``for_each`` resource id when that is a run)."""

    type: Literal["cancel-flow-run"] = "cancel-flow-run"


class _PoolTarget(InModel):
    source: Source = "selected"
    work_pool_id: uuid.UUID | None = None
    work_pool_name: str | None = Field(None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        _target(self, "work pool", ["work_pool_id", "work_pool_name"], "work_pool_id or work_pool_name")
        return self


class PauseWorkPool(_PoolTarget):
    type: Literal["pause-work-pool"] = "pause-work-pool"


class ResumeWorkPool(_PoolTarget):
    type: Literal["resume-work-pool"] = "resume-work-pool"


class _QueueTarget(InModel):
    source: Source = "selected"
    work_queue_id: uuid.UUID | None = None
    work_pool_name: str | None = Field(None, min_length=1, max_length=255)
    work_queue_name: str | None = Field(None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        if (self.work_pool_name is None) != (self.work_queue_name is None):
            raise PydanticCustomError("target", "a work queue by name needs both work_pool_name and work_queue_name")
        _target(self, "work queue", ["work_queue_id", "work_queue_name"],
                "work_queue_id or work_pool_name + work_queue_name")
        return self


class PauseWorkQueue(_QueueTarget):
    type: Literal["pause-work-queue"] = "pause-work-queue"


class ResumeWorkQueue(_QueueTarget):
    type: Literal["resume-work-queue"] = "resume-work-queue"


def _labels(value: dict[str, str]) -> dict[str, str]:
    return {prefect_names(key): (prefect_names(text) if prefect_names(key) == RESOURCE_ID else text)
            for key, text in value.items()}


class EmitEvent(InModel):
    """Emits one event; each string may be a template over the triggering event."""

    type: Literal["emit-event"] = "emit-event"
    event: Template = Field(min_length=1, max_length=MAX_EVENT_NAME)
    resource: Annotated[dict[str, str], AfterValidator(check_templates_within), AfterValidator(_labels)]
    related: list[Annotated[dict[str, str], AfterValidator(check_templates_within), AfterValidator(_labels)]] = Field(
        default_factory=new_list, max_length=MAX_RELATED)
    payload: TemplatedJSON = Field(default_factory=new_dict)

    @field_validator("event")
    @classmethod
    def _ours(cls, value: str) -> str:
        return value if is_template(value) else prefect_names(value)

    @field_validator("resource")
    @classmethod
    def _has_id(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get(RESOURCE_ID):
            raise PydanticCustomError("labels", f"the emitted event's resource needs {RESOURCE_ID!r}")
        return value

    @field_validator("related")
    @classmethod
    def _have_roles(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for labels in value:
            if not labels.get(RESOURCE_ID) or not labels.get(RESOURCE_ROLE):
                raise PydanticCustomError("labels", f"each related resource needs {RESOURCE_ID!r} and "
                                                    f"{RESOURCE_ROLE!r}")
        return value


class CallWebhook(InModel):
    """Calls an outgoing URL; ``body`` (text, or JSON written as indented text) is a template."""

    type: Literal["call-webhook"] = "call-webhook"
    url: Template = Field(min_length=1, max_length=4096)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: Annotated[dict[str, str], AfterValidator(check_templates_within)] = Field(default_factory=new_dict)
    body: Template = Field("", max_length=MAX_WEBHOOK_BODY)
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("body", mode="before")
    @classmethod
    def _json_as_text(cls, value: Any) -> Any:
        return json.dumps(value, indent=2) if isinstance(value, dict | list) else value

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str) -> str:
        if not is_template(value) and not value.startswith(("http://", "https://")):
            raise PydanticCustomError("url", f"a webhook url starts with http:// or https:// (got {value[:60]!r})")
        return value


class DoNothing(InModel):
    """Only records that the automation fired."""

    type: Literal["do-nothing"] = "do-nothing"


Action = Annotated[
    RunDeployment | PauseDeployment | ResumeDeployment | CancelFlowRun | PauseWorkPool | ResumeWorkPool
    | PauseWorkQueue | ResumeWorkQueue | EmitEvent | CallWebhook | DoNothing,
    Field(discriminator="type"),
]
MAX_ACTIONS = 20  # in each of actions, actions_on_trigger, actions_on_resolve
