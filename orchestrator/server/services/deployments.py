"""Deployments: upsert on (flow, name), lookups, updates."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from orchestrator import schemas
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.masking import is_secret_key, keep_masked
from orchestrator.schemas.owners import deployment_owner
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import (
    deployment_history,
    emitted,
    events,
    flows,
    jsonschemas,
    keyset,
    masked,
    schedules,
    transitions,
)
from orchestrator.server.services.parameters import check_schema, validate_parameters
from orchestrator.states import StateType


def _automations() -> Any:
    """The automations' service, imported by the first write that needs it: it and its schemas are
    ~45 ms of a server's start (4-5 % of its CPU), and a start reads deployments without them."""
    from orchestrator.server.services import automations

    return automations


def _owns_automations(session: Session, deployment_id: uuid.UUID) -> bool:
    """Whether the deployment owns automations (made from its ``triggers``). A deployment without
    triggers that owns none is written without the automations' service: it and the models of
    triggers and actions are ~3 MB of a server's memory and ~40 ms of CPU, which a server whose
    deployments have no triggers never needs."""
    owner = deployment_owner(deployment_id)
    return session.scalar(select(exists().where(m.Automation.owner_resource == owner))) or False


def upsert(session: Session, request: schemas.DeploymentCreate, *,
           api_key_fingerprint: str | None = None) -> tuple[m.Deployment, bool]:
    """Create the deployment, or update the one with the same flow and name. Returns (row, created).
    A history row records what changed and who (``api_key_fingerprint``) changed it."""
    pool = _require_pool(session, request.work_pool_name)
    _check_defaults(request.parameter_openapi_schema, request.parameters, request.enforce_parameter_schema)
    validate_job_variables(pool.base_job_template, request.job_variables, pool_name=pool.name, partial=True)
    _check_pull_steps(request.pull_steps)
    if request.triggers:
        _automations().parse_deployment_triggers(request.triggers)  # a bad trigger is a 422 before any write
    flow = flows.upsert(session, request.flow_name)
    fields = request.model_dump(exclude={"flow_name", "schedules"})
    prepared = schedules.prepare(request.schedules, parameters=request.parameters,
                                 schema=request.parameter_openapi_schema, enforce=request.enforce_parameter_schema)
    existing = session.scalar(select(m.Deployment).where(m.Deployment.flow_id == flow.id, m.Deployment.name == request.name))
    if existing is not None:
        # Values sent back masked (a deployment read and deployed again) keep the stored secrets.
        fields["job_variables"] = keep_masked(pool.base_job_template.get("variables"), fields["job_variables"],
                                              existing.job_variables or {})
        before = deployment_history.snapshot(existing)
        changed = any(getattr(existing, key) != value for key, value in fields.items())
        for key, value in fields.items():
            setattr(existing, key, value)
        changed = schedules.apply(session, existing, prepared) or changed
        existing.updated = utcnow()
        session.flush()
        if request.triggers or _owns_automations(session, existing.id):
            _automations().sync_owned(session, existing, request.triggers)  # its triggers, in this transaction
        if changed:  # an update replaces the auto-scheduled runs; an identical re-deploy keeps them
            schedules.reset(session, existing.id)
            deployment_history.record(session, existing, before, api_key_fingerprint=api_key_fingerprint)
        return existing, False
    deployment = m.Deployment(id=uuid.uuid4(), flow_id=flow.id, **fields)
    try:
        with session.begin_nested():
            session.add(deployment)
            schedules.apply(session, deployment, prepared)
            session.flush()
    except IntegrityError:  # a concurrent upsert created it first: update that one
        return upsert(session, request, api_key_fingerprint=api_key_fingerprint)
    if request.triggers:  # a new deployment owns no automation yet: only its triggers make some
        _automations().sync_owned(session, deployment, request.triggers)
    deployment_history.record(session, deployment, None, api_key_fingerprint=api_key_fingerprint)
    return deployment, True


def _check_defaults(schema: dict[str, Any], parameters: dict[str, Any], enforce: bool) -> None:
    """The schema must be valid, and the deployment's defaults valid values (required parameters
    may be left to each run)."""
    check_schema(schema)
    if not enforce or not schema:
        return
    validate_parameters({**schema, "required": []}, parameters)


def _require_pool(session: Session, pool_name: str) -> m.WorkPool:
    pool = session.scalar(select(m.WorkPool).where(m.WorkPool.name == pool_name))
    if pool is None:
        raise NotFound(f"work pool '{pool_name}' not found; create it with `orch work-pool create {pool_name} --type process`")
    return pool


def validate_job_variables(template: dict[str, Any], values: dict[str, Any], *, pool_name: str, partial: bool) -> None:
    """Refuse job variables the pool's ``variables`` schema does not accept, naming each one.

    ``partial`` (a deployment's values) leaves required variables to each run. A ``None`` value
    unsets a variable (or a key of ``env``), so it is not checked; ``env.FOO``-style keys are
    checked as the nested value they set. Names the schema does not declare are refused unless
    it sets ``additionalProperties`` itself: a misspelt variable would otherwise be ignored silently.
    """
    from job_templates.render import checkable

    schema = dict(template.get("variables") or {})
    given = checkable(values)  # dotted keys expanded; nulls unset, so are not checked
    declared = dict(schema.get("properties", {}))
    configuration = template.get("job_configuration")
    if "env" not in declared and isinstance(configuration, dict) and isinstance(configuration.get("env"), dict):
        # A literal env in the template takes the env variable merged in, as in Prefect, declared or not.
        declared["env"] = {"type": "object", "additionalProperties": {"type": "string"}}
        schema["properties"] = declared
    problems: list[tuple[str, str]] = []
    if "additionalProperties" not in schema:
        for name in sorted(set(given) - set(declared)):
            known = ", ".join(declared) or "none"
            problems.append((name, f"job variable '{name}' is not a variable of work pool '{pool_name}' (it has: {known})"))
    if partial:
        schema["required"] = []
    try:
        found = jsonschemas.errors(schema, given)
    except jsonschemas.SchemaProblem as problem:
        raise InvalidInput([{"loc": ["body", "job_variables"], "type": "job_variables",
                             "msg": f"work pool '{pool_name}' has a job variables schema that is not usable: {problem}"}]) from None
    for error in found:
        path = [str(p) for p in error.absolute_path]
        if not path and error.validator == "required":
            path = [next((r for r in error.validator_value if r not in given), "?")]
            problems.append((path[0], f"job variable '{path[0]}' is required by work pool '{pool_name}'"))
            continue
        name = ".".join(path) or "?"
        if is_secret_key(schema, name):  # the reason would quote the value: say what was expected instead
            problems.append((name, f"job variable '{name}' (secret) is not valid: it must satisfy "
                                   f"{error.validator} {json.dumps(error.validator_value, default=str)}"))
            continue
        problems.append((name, f"job variable '{name}': {_reason(error)}"))
    if problems:
        raise InvalidInput([{"loc": ["body", "job_variables", *name.split(".")], "msg": msg, "type": "job_variables"}
                            for name, msg in problems])


def _reason(error: Any) -> str:
    """An error's message; for ``anyOf`` (an env value: text or a ``secret_ref``) what each
    alternative refused, rather than "not valid under any of the given schemas"."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[Any]] = {}
        for e in error.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        # The alternative of the value's own type says what is wrong inside it.
        typed = [errs for errs in branches.values() if not any(e.validator == "type" and not e.path for e in errs)]
        chosen = typed[0] if len(typed) == 1 else [e for errs in branches.values() for e in errs]
        return "; or ".join(dict.fromkeys(f"{'.'.join(map(str, e.path)) + ': ' if e.path else ''}{e.message}"
                                         for e in chosen))
    return str(error.message)


def _check_pull_steps(steps: list[dict[str, Any]]) -> None:
    from orchestrator.runtime.pull_steps import check_pull_steps

    problems = check_pull_steps(steps)
    if problems:
        raise InvalidInput([{"loc": ["body", "pull_steps", *([] if index is None else [index])],
                             "msg": f"pull step {'' if index is None else f'#{index + 1} '}{message}",
                             "type": "pull_steps"} for index, message in problems])


def get(session: Session, deployment_id: uuid.UUID) -> m.Deployment:
    deployment = session.get(m.Deployment, deployment_id)
    if deployment is None:
        raise NotFound(f"deployment {deployment_id} not found")
    return deployment


def get_by_name(session: Session, flow_name: str, name: str) -> m.Deployment:
    deployment = session.scalar(
        select(m.Deployment).join(m.Flow).where(m.Flow.name == flow_name, m.Deployment.name == name)
    )
    if deployment is None:
        raise NotFound(f"deployment '{flow_name}/{name}' not found")
    return deployment


def list_(session: Session, *, flow_name: str | None = None, pool: str | None = None, tag: str | None = None,
          offset: int = 0, limit: int = 200) -> list[m.Deployment]:
    return page(session, flow_name=flow_name, pool=pool, tag=tag, offset=offset, limit=limit)[0]


def page(session: Session, *, flow_name: str | None = None, pool: str | None = None, tag: str | None = None,
         cursor: str | None = None, offset: int = 0, limit: int = 200) -> tuple[list[m.Deployment], str | None]:
    """Deployments by flow name and name, after ``cursor``; and the cursor of the next page."""
    statement = select(m.Deployment).join(m.Flow).options(selectinload(m.Deployment.schedules))
    if flow_name is not None:
        statement = statement.where(m.Flow.name == flow_name)
    if pool is not None:
        statement = statement.where(m.Deployment.work_pool_name == pool)
    if tag is not None:
        statement = statement.where(_has_tag(session, tag))
    # (flow name, name) is unique; the flow's name is read for the last row of a page only.
    order = keyset.Order((m.Flow.name, m.Deployment.name),
                         key=lambda d: (session.get_one(m.Flow, d.flow_id).name, d.name))
    return keyset.page_or_offset(session, statement, order, limit, cursor=cursor, offset=offset)


def _has_tag(session: Session, tag: str) -> Any:
    # In SQL, so offset/limit page over matching deployments only.
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import type_coerce
        from sqlalchemy.dialects.postgresql import JSONB

        return type_coerce(m.Deployment.tags, JSONB).contains([tag])
    each = func.json_each(m.Deployment.tags).table_valued("value")
    return select(each.c.value).where(each.c.value == tag).exists()


def reject_nulls(table: type[m.Base], changes: dict[str, Any]) -> None:
    """An explicit null for a column that cannot be empty is a 422 naming the field, not a 500."""
    columns = table.__table__.columns  # type: ignore[attr-defined]
    nulls = [key for key, value in changes.items() if value is None and key in columns and not columns[key].nullable]
    if nulls:
        raise InvalidInput([{"loc": ["body", key], "msg": f"'{key}' cannot be null", "type": "null"} for key in nulls])


def update(session: Session, deployment_id: uuid.UUID, request: schemas.DeploymentUpdate, *,
           api_key_fingerprint: str | None = None) -> m.Deployment:
    deployment = get(session, deployment_id)
    before = deployment_history.snapshot(deployment)
    changes = request.model_dump(exclude_unset=True, exclude={"schedules"})
    reject_nulls(m.Deployment, changes)
    if "work_pool_name" in changes or "job_variables" in changes:
        pool = _require_pool(session, changes.get("work_pool_name") or deployment.work_pool_name)
        if changes.get("job_variables") is not None:  # a form saved with masked values keeps the secrets
            changes["job_variables"] = keep_masked(pool.base_job_template.get("variables"), changes["job_variables"],
                                                   deployment.job_variables or {})
        variables = changes.get("job_variables", deployment.job_variables) or {}
        validate_job_variables(pool.base_job_template, variables, pool_name=pool.name, partial=True)
    if changes.get("pull_steps") is not None:
        _check_pull_steps(changes["pull_steps"])
    changed = any(getattr(deployment, key) != value for key, value in changes.items())
    for key, value in changes.items():
        setattr(deployment, key, value)
    _check_defaults(deployment.parameter_openapi_schema, deployment.parameters, deployment.enforce_parameter_schema)
    if request.schedules is not None:
        prepared = schedules.prepare(request.schedules, parameters=deployment.parameters,
                                     schema=deployment.parameter_openapi_schema,
                                     enforce=deployment.enforce_parameter_schema)
        changed = schedules.apply(session, deployment, prepared) or changed
    deployment.updated = utcnow()
    session.flush()
    if "triggers" in changes and (deployment.triggers or _owns_automations(session, deployment.id)):
        _automations().sync_owned(session, deployment, deployment.triggers)
    if changed:  # pause deletes the future auto-scheduled runs; resume and edits recreate them
        schedules.reset(session, deployment.id)
        deployment_history.record(session, deployment, before, api_key_fingerprint=api_key_fingerprint)
    return deployment


def delete(session: Session, deployment_id: uuid.UUID) -> None:
    """Delete a deployment: its future auto-scheduled runs go with it, and its other runs that
    have not started are cancelled (no worker could run them any more). History stays."""
    deployment = get(session, deployment_id)
    schedules.reset(session, deployment.id)
    waiting = session.scalars(select(m.FlowRun.id).where(
        m.FlowRun.deployment_id == deployment.id, transitions.SCHEDULED_FREE))
    for run_id in list(waiting):
        transitions.transition(session, run_id, StateType.CANCELLED, only_from=[StateType.SCHEDULED],
                               message=f"cancelled: deployment '{deployment.name}' was deleted")
    if _owns_automations(session, deployment.id):
        _automations().delete_owned(session, deployment.id)  # its triggers go with it, in this transaction
    flow_name = session.scalar(select(m.Flow.name).where(m.Flow.id == deployment.flow_id))
    events.record(session, [emitted.deployment_event(deployment, "deleted", flow_name=flow_name)])
    session.delete(deployment)
    session.flush()


# A deployment's own columns an answer shows (beside its flow's name and its schedules).
COLUMNS = tuple(name for name in schemas.Deployment.model_fields if name not in ("flow_name", "schedules"))


def to_schema(session: Session, deployment: m.Deployment, *, reveal_secrets: bool = False,
              flow_name: str | None = None) -> schemas.Deployment:
    """The deployment as answers show it: secret job variables masked; only the claim passes
    ``reveal_secrets`` (and its flow's name, read with the deployment)."""
    if flow_name is None:
        flow_name = session.scalar(select(m.Flow.name).where(m.Flow.id == deployment.flow_id))
    return schema_of(session, {c: getattr(deployment, c) for c in COLUMNS}, flow_name, deployment.schedules,
                     reveal_secrets=reveal_secrets)


def schema_of(session: Session, columns: dict[str, Any], flow_name: str | None,
              schedule_rows: Iterable[m.DeploymentSchedule | Row[Any]], *,
              reveal_secrets: bool = False) -> schemas.Deployment:
    """The answer of a deployment given as its ``COLUMNS``' values (an entity's, or the claim's
    row's: ``services/claims.py`` loads no entity) and its schedules (entities or rows)."""
    if not reveal_secrets:
        columns["job_variables"] = masked.job_variables(session, columns["work_pool_name"], columns["job_variables"])
    return schemas.Deployment.model_validate(
        {**columns, "flow_name": flow_name, "schedules": [schedules.to_schema(s) for s in schedule_rows]})
