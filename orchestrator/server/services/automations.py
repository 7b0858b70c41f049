"""Automations: create, read, change, delete, and the ones a deployment owns.

A deployment's ``triggers`` become automations owned by it (``owner_resource``), written in the
deployment's own transaction (``sync_owned`` from its upsert and update, ``delete_owned`` from its
delete): there is never a moment with the deployment but not its automations. A redeploy updates
them in place, paired by name (Prefect's default names carry the position), so their ids stay;
an unchanged trigger keeps its trigger ids too, so the evaluation's state for it carries on.

Every change sets ``session.info[CHANGED]``; ``announce_changed`` publishes hub topic
``AUTOMATIONS`` after the commit, so the evaluators on every replica re-read them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.errors import Conflict, InvalidInput, NotFound
from orchestrator.masking import MASK, keep_masked, mask_values
from orchestrator.schemas.automations import (
    Automation,
    AutomationCreate,
    AutomationUpdate,
    DeploymentTrigger,
    default_trigger_name,
    deployment_owner,
)
from orchestrator.schemas.base import DEFERRED
from orchestrator.schemas.triggers import without_ids
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import automation_checks, keyset, masked
from orchestrator.server.services.automation_changes import CHANGED, announce_changed  # noqa: F401 (its users' name)

DEFINITION = ("name", "description", "enabled", "trigger", "actions", "actions_on_trigger", "actions_on_resolve")


def create(session: Session, request: AutomationCreate, *, owner: str | None = None,
           owner_index: int | None = None, loc: tuple[str | int, ...] = ("body",)) -> m.Automation:
    row = m.Automation(id=uuid.uuid4(), owner_resource=owner, owner_index=owner_index)
    _write(session, row, request, loc=loc)
    session.add(row)
    session.flush()
    return row


def _write(session: Session, row: m.Automation, definition: AutomationCreate, *,
           loc: tuple[str | int, ...]) -> None:
    """Check ``definition`` (targets resolved, no self-trigger loop) and put it in ``row``; an
    unchanged trigger keeps its stored ids."""
    automation_checks.resolve_targets(session, definition, loc=loc)
    automation_checks.refuse_loops(session, row.id, definition, loc=loc)
    data = definition.model_dump(mode="json", include=set(DEFINITION))
    if row.trigger is not None and without_ids(row.trigger) == without_ids(data["trigger"]):
        data["trigger"] = row.trigger
    for key, value in data.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            session.info[CHANGED] = True


def get(session: Session, automation_id: uuid.UUID) -> m.Automation:
    row = session.get(m.Automation, automation_id)
    if row is None:
        raise NotFound(f"automation {automation_id} not found")
    return row


def list_(session: Session, *, owner: str | None = None, enabled: bool | None = None, name: str | None = None,
          offset: int = 0, limit: int = 200) -> list[m.Automation]:
    return page(session, owner=owner, enabled=enabled, name=name, offset=offset, limit=limit)[0]


BY_NAME = keyset.Order((m.Automation.name, m.Automation.id))


def page(session: Session, *, owner: str | None = None, enabled: bool | None = None, name: str | None = None,
         cursor: str | None = None, offset: int = 0, limit: int = 200) -> tuple[list[m.Automation], str | None]:
    """Automations by name (ties by id) after ``cursor``; and the next cursor."""
    statement = select(m.Automation)
    if owner is not None:
        statement = statement.where(m.Automation.owner_resource == owner)
    if enabled is not None:
        statement = statement.where(m.Automation.enabled == enabled)
    if name is not None:
        statement = statement.where(m.Automation.name == name)
    return keyset.page_or_offset(session, statement, BY_NAME, limit, cursor=cursor, offset=offset)


def update(session: Session, automation_id: uuid.UUID, request: AutomationUpdate) -> m.Automation:
    """Change the fields given; an owned automation takes only ``enabled`` (409 naming its owner)."""
    row = get(session, automation_id)
    changes = request.model_dump(exclude_unset=True)
    nulls = [key for key, value in changes.items() if value is None]
    if nulls:
        raise InvalidInput([{"loc": ["body", key], "msg": f"'{key}' cannot be null", "type": "null"} for key in nulls])
    if row.owner_resource is not None and set(changes) - {"enabled"}:
        raise Conflict(f"automation '{row.name}' belongs to {row.owner_resource}: change that deployment's "
                       "triggers instead (only enable and disable work here)")
    stored = {key: getattr(row, key) for key in DEFINITION}
    merged = {**stored, **request.model_dump(mode="json", exclude_unset=True)}
    for key in ACTION_LISTS:
        if key in changes:
            merged[key] = _kept(session, merged[key], stored[key] or [])
    try:
        definition = AutomationCreate.model_validate(merged)
    except ValidationError as error:
        raise InvalidInput(_errors(error, ("body",))) from None
    _write(session, row, definition, loc=("body",))
    row.updated = utcnow()
    session.flush()
    return row


def set_enabled(session: Session, automation_id: uuid.UUID, enabled: bool) -> m.Automation:
    """Enable or disable one automation, owned or not."""
    row = get(session, automation_id)
    if row.enabled != enabled:
        row.enabled = enabled
        row.updated = utcnow()
        session.info[CHANGED] = True
        session.flush()
    return row


def delete(session: Session, automation_id: uuid.UUID) -> None:
    row = get(session, automation_id)
    if row.owner_resource is not None:
        raise Conflict(f"automation '{row.name}' belongs to {row.owner_resource}: it goes when that deployment's "
                       "trigger is removed or the deployment is deleted (disable it meanwhile)")
    session.delete(row)
    session.info[CHANGED] = True
    session.flush()


# --- owned by a deployment ---------------------------------------------------------------------

_DEPLOYMENT_TRIGGERS: TypeAdapter[list[Any]] = TypeAdapter(list[DeploymentTrigger], config=DEFERRED)  # built at first use


def parse_deployment_triggers(raw: list[dict[str, Any]]) -> list[Any]:
    """A deployment's ``triggers`` as given (Prefect's YAML or JSON); a 422 naming the field."""
    try:
        return _DEPLOYMENT_TRIGGERS.validate_python(raw)
    except ValidationError as error:
        raise InvalidInput(_errors(error, ("body", "triggers"))) from None


def sync_owned(session: Session, deployment: m.Deployment, raw: list[dict[str, Any]]) -> list[m.Automation]:
    """Make the deployment's automations those of its ``triggers``, in the caller's transaction.

    Paired by name with the ones it owns already (each updated in place, keeping its id); the
    others are created, and owned ones left without a trigger deleted."""
    triggers = parse_deployment_triggers(raw)
    owner = deployment_owner(deployment.id)
    existing = list_(session, owner=owner, limit=10_000)
    by_name: dict[str, list[m.Automation]] = {}
    for row in sorted(existing, key=lambda r: (r.owner_index is None, r.owner_index)):
        by_name.setdefault(row.name, []).append(row)
    kept: list[m.Automation] = []
    for index, trigger in enumerate(triggers):
        definition = trigger.as_automation(deployment.id, default_trigger_name(deployment.name, index))
        loc = ("body", "triggers", index)
        row = by_name.get(definition.name, [None]).pop(0) if by_name.get(definition.name) else None
        if row is None:
            kept.append(create(session, definition, owner=owner, owner_index=index, loc=loc))
            continue
        before = {key: getattr(row, key) for key in DEFINITION}
        _write(session, row, definition, loc=loc)
        if row.owner_index != index:
            row.owner_index = index
        if {key: getattr(row, key) for key in DEFINITION} != before:
            row.updated = utcnow()
        kept.append(row)
    for rows in by_name.values():
        for row in rows:
            session.delete(row)
            session.info[CHANGED] = True
    session.flush()
    return kept


def delete_owned(session: Session, deployment_id: uuid.UUID) -> None:
    """Delete the deployment's automations (in the deployment's delete transaction)."""
    for row in list_(session, owner=deployment_owner(deployment_id), limit=10_000):
        session.delete(row)
        session.info[CHANGED] = True
    session.flush()


def to_schema(row: m.Automation, session: Session) -> Automation:
    """The automation as answers show it: a run-deployment action's secret job variables masked
    by its deployment's pool (every value, when the deployment is inferred from the event)."""
    return _schema(row, lambda action: _shown(session, action))


def definition(row: m.Automation) -> Automation:
    """The automation as stored, secrets in clear: for the evaluator that acts on it, never an answer."""
    return _schema(row, lambda action: action)


def _schema(row: m.Automation, show: Callable[[dict[str, Any]], dict[str, Any]]) -> Automation:
    return Automation.model_validate({
        "id": row.id, "name": row.name, "description": row.description, "enabled": row.enabled,
        "trigger": row.trigger, "owner_resource": row.owner_resource, "created": row.created, "updated": row.updated,
        **{key: [show(action) for action in getattr(row, key) or ()] for key in ACTION_LISTS}})


ACTION_LISTS = ("actions", "actions_on_trigger", "actions_on_resolve")


def _variables_schema(session: Session, action: dict[str, Any]) -> dict[str, Any] | None:
    """The ``variables`` schema of the pool a run-deployment action's deployment runs on, or None
    (deployment inferred from the event, or gone)."""
    if action.get("deployment_id") is None:
        return None
    # A list of automations names the same few deployments again and again: one read each per session.
    pools: dict[str, str | None] = session.info.setdefault(_DEPLOYMENT_POOLS, {})
    target = str(action["deployment_id"])
    if target not in pools:
        pools[target] = session.scalar(select(m.Deployment.work_pool_name).where(m.Deployment.id == uuid.UUID(target)))
    pool = pools[target]
    return masked.pool_variables(session, pool) or {} if pool is not None else None


_DEPLOYMENT_POOLS = "orchestrator.automations.deployment_pools"  # session.info: deployment id -> its pool


def _shown(session: Session, action: dict[str, Any]) -> dict[str, Any]:
    values = action.get("job_variables")
    if action.get("type") != "run-deployment" or not values:
        return action
    schema = _variables_schema(session, action)
    if schema is None:  # which pool is not known: every value is treated as secret
        return {**action, "job_variables": masked.job_variables(None, None, values)}
    return {**action, "job_variables": mask_values(schema, values)}


def _kept(session: Session, new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Actions sent back as answers showed them: a job variable still reading ``MASK`` keeps the
    value stored at the same place (the same action of the same deployment), so a form saved
    unchanged does not overwrite a secret with the mask."""
    out = []
    for index, action in enumerate(new):
        stored = old[index] if index < len(old) else {}
        values = action.get("job_variables")
        if (action.get("type") == "run-deployment" and values and stored.get("type") == "run-deployment"
                and str(stored.get("deployment_id")) == str(action.get("deployment_id"))):
            before = stored.get("job_variables") or {}
            schema = _variables_schema(session, action)
            if schema is None:
                values = {k: before[k] if v == MASK else v for k, v in values.items() if v != MASK or k in before}
            else:
                values = keep_masked(schema, values, before)
            action = {**action, "job_variables": values}
        out.append(action)
    return out


def _errors(error: ValidationError, prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in error.errors(include_url=False, include_context=False, include_input=False)]
