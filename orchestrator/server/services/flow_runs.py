"""Flow runs: creation, queries and logs. State changes live in ``services/transitions.py``
(re-exported here for callers that think of them as run operations)."""

from __future__ import annotations

import datetime as dt
import types
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Select, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from orchestrator import schemas
from orchestrator.errors import Conflict, InvalidInput, NotFound, OrchestratorError
from orchestrator.masking import keep_masked
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import admission, create_targets, keyset, masked
from orchestrator.server.services.new_runs import insert_runs, run_values
from orchestrator.server.services.parameters import validate_parameters
from orchestrator.server.services.run_columns import heartbeat, set_infrastructure
from orchestrator.server.services.run_groups import RunGroups
from orchestrator.server.services.run_statements import RunRow
from orchestrator.server.services.transitions import (
    cancel,
    claim,
    crash,
    left_state,
    reschedule,
    set_state,
    transition,
)
from orchestrator.states import StateType

__all__ = ["cancel", "claim", "crash", "heartbeat", "left_state", "reschedule", "set_infrastructure", "set_state",
           "transition"]


class NewRun(types.SimpleNamespace):
    """A run ``create`` just wrote, as its columns (every one: ``new_runs.run_values``), read by the
    answer, the publish and the hub. Not an ORM instance: SQLAlchemy's instrumented constructor
    cost ~120 µs, a twentieth of a create's CPU (bench/RESULTS.md, issue 22); nothing adds it to a
    session."""


def get(session: Session, run_id: uuid.UUID) -> m.FlowRun:
    run = session.get(m.FlowRun, run_id)
    if run is None:
        raise NotFound(f"flow run {run_id} not found")
    return run


def create(
    session: Session, deployment_id: uuid.UUID, request: schemas.FlowRunCreate, *, now: dt.datetime | None = None,
    publish: bool = False, groups: RunGroups | None = None,
) -> tuple[m.FlowRun | NewRun, bool]:
    """Create a SCHEDULED run of a deployment. Returns ``(run, created)``; a repeated idempotency
    key returns the existing run and ``created=False``. With ``publish``, a run due now whose pool,
    queue and deployment are open and unlimited comes back with ``dispatched_at`` set: the caller
    publishes it after the commit (any other run is left to the dispatcher, so limits and pauses hold).

    One query reads what the run needs of the deployment, its pool and the run's queue, or, on
    PostgreSQL, the target kept from an earlier create is used (``create_targets``): its insert
    writes only while those rows are unchanged, and when they changed, or the kept target refuses
    the run, the rows are read again and decide. ``new_runs.insert_runs`` (the writer every creator
    shares) writes the run and its first state. This is the API's hottest write: the statements are
    built once, and no ORM object is loaded or flushed. Its one write is one statement (with a kept
    target and no idempotency key, the only statement), so a caller may run it outside a
    transaction (the create-run route, whose ``session`` on PostgreSQL is a ``db.session.OneWrite``:
    a Core connection with the ``get_bind``, ``connection``, ``info``, ``execute`` and ``scalar`` of
    a session, all that this module and those it calls use of one). ``groups`` (the create-run
    route's, ``session`` in autocommit): such a create is written with those arriving at the same
    time, in one statement (``run_groups``)."""
    now = now or utcnow()
    target, versions = create_targets.read(session, deployment_id, request.work_queue_name)
    if versions is not None:
        try:
            return _create(session, deployment_id, request, target, versions, now=now, publish=publish,
                           groups=groups)
        except (create_targets.Stale, OrchestratorError):  # changed since kept, or refused on what was kept
            target, _ = create_targets.read(session, deployment_id, request.work_queue_name, fresh=True)
    return _create(session, deployment_id, request, target, None, now=now, publish=publish)


def _create(session: Session, deployment_id: uuid.UUID, request: schemas.FlowRunCreate, target: Any,
            versions: create_targets.Versions | None, *, now: dt.datetime, publish: bool,
            groups: RunGroups | None = None) -> tuple[m.FlowRun | NewRun, bool]:
    if target is None:
        raise NotFound(f"deployment {deployment_id} not found")
    if request.idempotency_key is not None:
        existing = _by_idempotency_key(session, deployment_id, request.idempotency_key)
        if existing is not None:
            return existing, False
    parameters = {**target.parameters, **request.parameters}
    enforce = request.enforce_parameter_schema
    if target.enforce_parameter_schema if enforce is None else enforce:
        validate_parameters(target.parameter_openapi_schema, parameters)
    if target.pool_name is None:
        raise NotFound(f"work pool '{target.work_pool_name}' of deployment '{target.name}' not found")
    job_variables = request.job_variables
    if job_variables:  # a secret sent back masked (a form, "run again") is not given: the deployment's holds
        job_variables = keep_masked((target.base_job_template or {}).get("variables"), job_variables, {})
        masked.remember_pool(session, target.pool_name, target.base_job_template)  # the answer masks with it
    if job_variables:
        _check_job_variables(target.base_job_template, target.pool_name, target.job_variables, job_variables)
    elif not create_targets.checked(session, deployment_id, request.work_queue_name, target):
        # The pool's defaults and the deployment's values alone: checked once per kept target.
        _check_job_variables(target.base_job_template, target.pool_name, target.job_variables, {})
        create_targets.mark_checked(session, deployment_id, request.work_queue_name, target)
    queue_name = target.queue_name
    if queue_name is None:
        if request.work_queue_name is not None:
            raise InvalidInput(
                [{"loc": ["body", "work_queue_name"], "msg": f"work queue '{request.work_queue_name}' not in pool "
                  f"'{target.pool_name}'", "type": "value_error"}]
            )
        queue_name = target.work_queue_name or target.default_queue_name
    expected_start_time = request.scheduled_time or now
    publish_now = publish and admission.publish_at_once(
        due=expected_start_time <= now, pool_paused=target.pool_paused, queue_paused=target.queue_paused,
        pool_limit=target.pool_limit, queue_limit=target.queue_limit, deployment_limit=target.concurrency_limit)
    values = run_values(
        flow_id=target.flow_id, deployment_id=deployment_id, deployment_version=target.version,
        work_pool_name=target.pool_name, work_queue_name=queue_name, parameters=parameters,
        job_variables=job_variables, tags=[*target.tags, *request.tags],
        idempotency_key=request.idempotency_key, expected_start_time=expected_start_time, now=now,
        dispatched_at=now if publish_now else None)
    guard = None if versions is None else create_targets.guard_parameters(deployment_id, request.work_queue_name,
                                                                         versions)
    if guard is not None and groups is not None and request.idempotency_key is None:
        groups.insert(session, values, guard)  # with the creates arriving meanwhile; Stale as below
        return NewRun(**values), True
    if not insert_runs(session, [values], guard=guard):
        # Two clients racing with one key: the unique constraint picked the other.
        existing = _by_idempotency_key(session, deployment_id, request.idempotency_key or "")
        if existing is None:  # the other run was deleted as soon as it was made
            raise Conflict(f"a run with idempotency key '{request.idempotency_key}' was created and deleted meanwhile")
        return existing, False
    return NewRun(**values), True  # what was written, without an ORM flush


def _check_job_variables(template: dict[str, Any], pool_name: str, deployment_values: dict[str, Any],
                         run_values: dict[str, Any]) -> None:
    """What the worker will render (defaults < deployment < run) must satisfy the pool's schema."""
    from job_templates.render import merge_values, variable_defaults
    from orchestrator.server.services.deployments import validate_job_variables

    merged = merge_values(variable_defaults(template), deployment_values, run_values)
    validate_job_variables(template, merged, pool_name=pool_name, partial=False)


def _by_idempotency_key(session: Session, deployment_id: uuid.UUID, key: str) -> m.FlowRun | None:
    return session.scalar(
        select(m.FlowRun).where(m.FlowRun.deployment_id == deployment_id, m.FlowRun.idempotency_key == key)
    )


def query(
    *,
    deployment_id: uuid.UUID | None = None,
    states: Sequence[StateType] = (),
    state_names: Sequence[str] = (),
    name: str | None = None,
    tags: Sequence[str] = (),
    pool: str | None = None,
    dialect: str,
) -> Select[tuple[m.FlowRun]]:
    """Runs matching every filter given; ``states`` (types) and ``state_names`` (e.g. Late) add up."""
    statement = select(m.FlowRun)
    if deployment_id is not None:
        statement = statement.where(m.FlowRun.deployment_id == deployment_id)
    either = in_states(states, state_names)
    if either:
        statement = statement.where(or_(*either))
    if name is not None:
        statement = statement.where(m.FlowRun.name == name)
    if pool is not None:
        statement = statement.where(m.FlowRun.work_pool_name == pool)
    for tag in tags:
        statement = statement.where(_has_tag(tag, dialect))
    return statement


def in_states(states: Sequence[StateType] = (), state_names: Sequence[str] = ()) -> list[Any]:
    """One condition per state type and state name asked for: a run meeting any is listed. Given
    to ``page`` and ``count`` as ``either`` (instead of to ``query``), several states page by index,
    not by a sort."""
    return ([m.FlowRun.state_type == s for s in dict.fromkeys(states)]
            + [m.FlowRun.state_name == n for n in dict.fromkeys(state_names)])


def _has_tag(tag: str, dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy import type_coerce
        from sqlalchemy.dialects.postgresql import JSONB

        return type_coerce(m.FlowRun.tags, JSONB).contains([tag])  # jsonb @>, served by the GIN index
    each = func.json_each(m.FlowRun.tags).table_valued("value")
    return select(each.c.value).where(each.c.value == tag).exists()


# The order of every list of runs (API, CLI, UI): newest expected start first, ties by id. Served
# by the (expected_start_time, id) index, and behind an equality filter by (deployment_id | work_pool_name
# | state_type, expected_start_time).
NEWEST_FIRST = keyset.Order((m.FlowRun.expected_start_time, m.FlowRun.id), descending=True)
COUNT_CAP = 1000  # a list counts its matches up to this many ("1000+"), never a year of history


def page(session: Session, statement: Select[tuple[m.FlowRun]], limit: int, *, cursor: str | None = None,
         offset: int = 0, either: Sequence[Any] = ()) -> tuple[list[m.FlowRun], str | None]:
    """A page of runs newest first after ``cursor`` (or at the deprecated ``offset``), and the
    cursor of the next page. ``either``: ``in_states`` (runs in any of them; none: every state)."""
    return keyset.page_or_offset(session, statement, NEWEST_FIRST, limit, cursor=cursor, offset=offset,
                                 either=either)


def count(session: Session, statement: Select[tuple[m.FlowRun]], *, either: Sequence[Any] = ()) -> tuple[int, bool]:
    """The matches of ``statement`` (and ``either``, as for ``page``), counted up to ``COUNT_CAP``:
    ``(count, capped)``."""
    return keyset.bounded_count(session, statement, COUNT_CAP, either=either, unique=m.FlowRun.id)


def history(session: Session, run_id: uuid.UUID) -> list[m.FlowRunState]:
    get(session, run_id)
    return list(
        session.scalars(
            select(m.FlowRunState).where(m.FlowRunState.flow_run_id == run_id).order_by(m.FlowRunState.id)
        )
    )


def add_logs(session: Session, run_id: uuid.UUID, logs: Sequence[schemas.LogCreate]) -> int:
    get(session, run_id)
    if logs:
        try:
            session.execute(
                insert(m.Log),
                [
                    {"flow_run_id": run_id, "timestamp": log.timestamp, "level": log.level, "name": log.name,
                     "message": log.message}
                    for log in logs
                ],
            )
        except IntegrityError:  # retention deleted the run after it was read: its lines go with it
            raise NotFound(f"flow run {run_id} not found (deleted while its logs were written)") from None
    return len(logs)


def read_logs(session: Session, run_id: uuid.UUID, *, after: int, limit: int) -> list[m.Log]:
    get(session, run_id)
    return list(
        session.scalars(
            select(m.Log).where(m.Log.flow_run_id == run_id, m.Log.id > after).order_by(m.Log.id).limit(limit)
        )
    )


_RUN_FIELDS = tuple(name for name in schemas.FlowRun.model_fields if name != "state")  # a NewRun lacks some
_ABSENT = object()


def _session_of(run: m.FlowRun | RunRow | NewRun) -> Session | None:  # a row: the caller passes its session
    return object_session(run) if isinstance(run, m.FlowRun) else None


def to_schema(run: m.FlowRun | RunRow | NewRun, session: Session | None = None, *,
              reveal_secrets: bool = False) -> schemas.FlowRun:
    """The run as answers show it: secret job variables masked (``services/masked.py``; the
    pool's schema is read through ``session``, else the run's own). Only the claim passes
    ``reveal_secrets``."""
    data = {name: value for name in _RUN_FIELDS if (value := getattr(run, name, _ABSENT)) is not _ABSENT}
    if not reveal_secrets and data.get("job_variables"):
        data["job_variables"] = masked.job_variables(session or _session_of(run), run.work_pool_name,
                                                     data["job_variables"])
    return schemas.FlowRun.model_validate(
        {
            **data,
            "state": {
                "type": run.state_type,
                "name": run.state_name,
                "message": run.state_message,
                "timestamp": run.state_timestamp,
            },
        }
    )


_ANSWER_FIELDS = tuple(schemas.FlowRun.model_fields)


def created_json(run: NewRun, session: Session | None) -> str:
    """``to_schema(run, session).model_dump_json()`` of a run ``create`` just wrote, without the
    model: its values are ``run_values``' own, of the answer's types already, so validating them
    changes none, and pydantic's encoder writes them as the model's serializer does -- non-finite
    numbers as ``null``, the model's default (tests/unit/test_created_run_answer.py compares both
    for runs of many shapes). ~5 µs of the create-run route's thread, half the model's way
    (bench/RESULTS.md, issue 22, "round 9")."""
    values = vars(run)
    state = {"type": run.state_type, "name": run.state_name, "message": run.state_message,
             "timestamp": run.state_timestamp}
    answer = {name: state if name == "state" else values[name] for name in _ANSWER_FIELDS}  # the model's order
    if answer["job_variables"]:
        answer["job_variables"] = masked.job_variables(session, run.work_pool_name, answer["job_variables"])
    return to_json(answer, inf_nan_mode="null").decode()

