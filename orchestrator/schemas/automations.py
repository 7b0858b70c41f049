"""Automations on the wire: a trigger (``schemas.triggers``) and the actions it runs
(``schemas.actions``), and a deployment's ``triggers`` (Prefect's ``DeploymentTrigger``), each of
which becomes an automation owned by the deployment that runs it.

An automation owned by a resource (``owner_resource``, e.g. ``orchestrator.deployment.<id>``)
follows its owner: it is created, replaced and deleted with the deployment, and through the API
it can only be enabled or disabled.
"""

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from orchestrator.schemas.actions import MAX_ACTIONS, Action, RunDeployment, TemplatedJSON
from orchestrator.schemas.base import InModel, OutModel, new_list
from orchestrator.schemas.owners import deployment_owner
from orchestrator.schemas.triggers import (
    KIND_ERROR,
    MAX_DEPTH,
    MAX_WITHIN,
    CompoundTrigger,
    Duration,
    EventTrigger,
    SequenceTrigger,
    Trigger,
    depth,
    trigger_kind,
)

MAX_NAME = 255
MAX_DESCRIPTION = 10_000


class _Definition(InModel):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str = Field("", max_length=MAX_DESCRIPTION)
    enabled: bool = True
    trigger: Trigger
    actions: list[Action] = Field(default_factory=new_list, max_length=MAX_ACTIONS)
    actions_on_trigger: list[Action] = Field(default_factory=new_list, max_length=MAX_ACTIONS)
    actions_on_resolve: list[Action] = Field(default_factory=new_list, max_length=MAX_ACTIONS)

    @model_validator(mode="after")
    def _shallow(self) -> Any:
        if depth(self.trigger) > MAX_DEPTH:
            raise PydanticCustomError("trigger", f"composite triggers nest at most {MAX_DEPTH} deep")
        return self


class AutomationCreate(_Definition):
    owner_resource: None = Field(None, description="Owned automations come from a deployment's triggers.")


class AutomationUpdate(InModel):
    """PATCH: the fields given replace the automation's (an owned one takes only ``enabled``)."""

    name: str | None = Field(None, min_length=1, max_length=MAX_NAME)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    enabled: bool | None = None
    trigger: Trigger | None = None
    actions: list[Action] | None = Field(None, max_length=MAX_ACTIONS)
    actions_on_trigger: list[Action] | None = Field(None, max_length=MAX_ACTIONS)
    actions_on_resolve: list[Action] | None = Field(None, max_length=MAX_ACTIONS)


class Automation(OutModel):
    id: uuid.UUID
    name: str
    description: str
    enabled: bool
    trigger: Trigger
    actions: list[Action]
    actions_on_trigger: list[Action]
    actions_on_resolve: list[Action]
    owner_resource: str | None
    created: dt.datetime
    updated: dt.datetime


class _DeploymentFields(InModel):
    """What a deployment's trigger adds to a trigger: the automation's name and what it runs."""

    name: str | None = Field(None, min_length=1, max_length=MAX_NAME)
    description: str = Field("", max_length=MAX_DESCRIPTION)
    enabled: bool = True
    parameters: TemplatedJSON | None = Field(None, description="None: the deployment's defaults.")
    job_variables: dict[str, Any] | None = None
    schedule_after: Duration = Field(dt.timedelta(0), ge=dt.timedelta(0), le=MAX_WITHIN)

    def as_automation(self, deployment_id: uuid.UUID, default_name: str) -> AutomationCreate:
        """The automation this trigger stands for: run its own deployment with its parameters."""
        fields = set(_DeploymentFields.model_fields)
        trigger = self.model_dump(exclude=fields | {"id"})
        return AutomationCreate(
            name=self.name or default_name, description=self.description, enabled=self.enabled,
            trigger=trigger,  # type: ignore[arg-type]
            actions=[RunDeployment(deployment_id=deployment_id, parameters=self.parameters,
                                   job_variables=self.job_variables, schedule_after=self.schedule_after)])


class DeploymentEventTrigger(_DeploymentFields, EventTrigger):
    pass


class DeploymentCompoundTrigger(_DeploymentFields, CompoundTrigger):
    pass


class DeploymentSequenceTrigger(_DeploymentFields, SequenceTrigger):
    pass


DeploymentTrigger = Annotated[
    Annotated[DeploymentEventTrigger, Tag("event")] | Annotated[DeploymentCompoundTrigger, Tag("compound")]
    | Annotated[DeploymentSequenceTrigger, Tag("sequence")],
    Discriminator(trigger_kind, **KIND_ERROR),  # type: ignore[arg-type]
]


def trigger_as_dict(trigger: Any) -> dict[str, Any]:
    """A deployment trigger as given to ``deploy(triggers=...)`` (a dict, or a model such as
    ``DeploymentEventTrigger(expect=[...])``) as JSON: the fields set, never the server's ids."""
    if isinstance(trigger, dict):
        return trigger
    from orchestrator.schemas.triggers import without_ids

    return {"type": trigger.type, **without_ids(trigger.model_dump(mode="json", exclude_unset=True))}


def default_trigger_name(deployment_name: str, index: int) -> str:
    """Prefect's name for the ``index``-th (0-based) unnamed trigger of a deployment."""
    return f"{deployment_name}__automation_{index + 1}"


__all__ = [
    "Action",
    "Automation",
    "AutomationCreate",
    "AutomationUpdate",
    "CompoundTrigger",
    "DeploymentTrigger",
    "EventTrigger",
    "SequenceTrigger",
    "Trigger",
    "default_trigger_name",
    "deployment_owner",
    "trigger_as_dict",
]
