"""Every change of a run's state goes through ``transition`` -- the one writer -- and the few
domain rules built on it: claims, cancellation, rescheduling, crashes with automatic restarts,
and reported states. The lifecycle columns that change without a change of state (the publish
mark, heartbeats, the infrastructure id) are written by the named functions at the end, and by
nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, literal, or_, select
from sqlalchemy.orm import Session

from orchestrator import schemas, states
from orchestrator.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import emitted, events, open_task_runs, run_statements
from orchestrator.server.services.run_statements import NOW, RUNS, RunRow
from orchestrator.states import (
    AWAITING_RESTART,
    AWAITING_RETRY,
    DEFAULT_NAMES,
    FINAL_STATES,
    StateType,
    allowed_sources,
    guards_of,
    is_held,
)

RESULT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Guard:
    """A named condition a transition needs besides the table, checked by the guarded update
    itself (so a race is settled by the database). The pairs' own guards are named in
    ``orchestrator/states.py: GUARDS``; a caller adds those of its situation (``holder``, ``named``).

    The name names the condition: a transition's statement is built once per shape and kept by
    its guards' names (``run_statements.transition``), so a condition's values are bind
    parameters, given in ``params``, never literals in it."""

    name: str
    condition: ColumnElement[bool]
    params: Mapping[str, Any] = field(default_factory=dict)


# Read by the state's name (``states.py``): AwaitingRetry is the one SCHEDULED state a process holds.
UNHELD = Guard(states.UNHELD, RUNS.state_name != AWAITING_RETRY)
HELD = Guard(states.HELD, RUNS.state_name == AWAITING_RETRY)
_PAIR_GUARDS = {g.name: g for g in (UNHELD, HELD)}
# The two kinds of SCHEDULED run, for the queries that pick runs (dispatcher, slots, reaper).
SCHEDULED_HELD = and_(RUNS.state_type == StateType.SCHEDULED, HELD.condition)
SCHEDULED_FREE = and_(RUNS.state_type == StateType.SCHEDULED, UNHELD.condition)


def holder(worker_name: str) -> Guard:
    """Only for the worker (and its flow-run process) that holds the run: a report from a claim
    that was lost and given to another worker no longer applies."""
    return Guard("holder", _HOLDER, {"holder": worker_name})


def named(state_name: str) -> Guard:
    """Only a run still under this state name (Late only from a plain Scheduled; skip only Late)."""
    return Guard("named", _NAMED, {"named": state_name})


_HOLDER = run_statements.guarded(RUNS.worker_name, "holder")
_NAMED = run_statements.guarded(RUNS.state_name, "named")


def _params_of(guards: Sequence[Guard]) -> dict[str, Any]:
    return {key: value for guard in guards for key, value in guard.params.items()}


@dataclass(frozen=True)
class Effect:
    """A named change of lifecycle columns a transition writes along with the state."""

    name: str
    values: Mapping[str, Any]


def claimed_by(worker_name: str) -> Effect:
    """Held by this worker from now; its flow-run process has not reported yet."""
    return Effect("claimed", {"worker_name": worker_name, "heartbeat_at": None})


def released(when: dt.datetime) -> Effect:
    """Free for any worker from ``when``: not held, not published, no infrastructure."""
    return Effect("released", {"worker_name": None, "dispatched_at": None, "infrastructure_id": None,
                               "heartbeat_at": None, "expected_start_time": when})


def retry_at(when: dt.datetime) -> Effect:
    """Its holder retries it in-process at ``when``."""
    return Effect("retry", {"expected_start_time": when})


def restarted(count: int) -> Effect:
    """The ``count``-th automatic restart after a crash."""
    return Effect("restarted", {"crash_restarts": count})


def loaded(flow_version: str | None, run_name: str | None) -> Effect:
    """What the flow-run process loaded: the flow's version (audit) and the run name it asks for."""
    values = {key: value for key, value in (("flow_version", flow_version), ("name", run_name)) if value is not None}
    return Effect("loaded", values)


def located(infrastructure_id: str) -> Effect:
    """Where the flow-run process reporting RUNNING runs, said with that report (a process worker's
    forked process: ``runtime/engine.py``), not by a write of its own: its lease's first beat, sent
    as it starts, then has nothing to write (``api/routes/flow_runs.py``, ``opening``). The process
    that reports RUNNING is the run's, so what it says replaces what an earlier holder's said."""
    return Effect("located", {"infrastructure_id": infrastructure_id})


@dataclass(frozen=True)
class Returning:
    """Columns a transition's ``UPDATE`` returns beside the run's, from tables its guards join
    (``UPDATE ... FROM``): what its caller would otherwise read with a statement of its own (the
    claim's answer: ``claims.py``). Named as a guard is: the name keys the kept statement."""

    name: str
    columns: Sequence[ColumnElement[Any]]


def transition(
    session: Session,
    run_id: uuid.UUID,
    target: StateType,
    *,
    name: str | None = None,
    message: str | None = None,
    result: Any = None,
    only_from: Iterable[StateType] | None = None,
    guards: Sequence[Guard] = (),
    effects: Sequence[Effect] = (),
    now: dt.datetime | None = None,
) -> RunRow:
    """The only writer of a run's state and of the lifecycle columns that go with it.

    One guarded ``UPDATE ... WHERE id = :id AND (state_type = :source AND <the pair's guards>)
    OR ... [AND guards] RETURNING``: when two callers race, exactly one wins and the other gets
    ``InvalidTransition``. ``only_from`` narrows the table's sources (a claim is only valid from
    SCHEDULED); ``guards`` add named conditions; ``effects`` named column changes. Then the side
    effects, in the same transaction.
    """
    now = now or utcnow()
    run = attempt(session, run_id, target, name=name, message=message, result=result, only_from=only_from,
                  guards=guards, effects=effects, now=now)
    if run is None:
        sources = _sources(target, only_from)
        current = session.scalar(select(RUNS.state_type).where(RUNS.id == run_id))
        if current is None:
            raise NotFound(f"flow run {run_id} not found")
        if current in sources:
            raise InvalidTransition(f"flow run {run_id} is {current}; it cannot move to {target}: "
                                    "the caller does not hold it (or no longer does)")
        raise InvalidTransition(f"flow run {run_id} is {current}; it cannot move to {target}")
    return run


def _sources(target: StateType, only_from: Iterable[StateType] | None) -> set[StateType]:
    sources = set(allowed_sources(target))
    if only_from is not None:
        sources &= set(only_from)
    return sources


def attempt(
    session: Session,
    run_id: uuid.UUID,
    target: StateType,
    *,
    name: str | None = None,
    message: str | None = None,
    result: Any = None,
    only_from: Iterable[StateType] | None = None,
    guards: Sequence[Guard] = (),
    effects: Sequence[Effect] = (),
    returning: Returning | None = None,
    now: dt.datetime | None = None,
) -> RunRow | None:
    """``transition``, answering None instead of raising when its guarded ``UPDATE`` matched
    nothing (and reading nothing to say why): for a caller with another way to go then (the
    claim: ``claims.py``). ``returning``: more columns for the row it answers."""
    sources = _sources(target, only_from)
    now = now or utcnow()
    state_name = name or DEFAULT_NAMES[target]
    values: dict[str, Any] = {
        "state_type": target,
        "state_name": state_name,
        "state_message": message,
        "state_timestamp": now,
        "updated": now,
    }
    for effect in effects:
        values.update(effect.values)
    if is_held(target, state_name) and "worker_name" in values and values["worker_name"] is None:
        raise ValueError(f"{AWAITING_RETRY} is held by its process: a released run is named otherwise")
    running = target == StateType.RUNNING  # and start_time, run_count by expression (run_statements)
    if running:
        values["heartbeat_at"] = now
    if target in FINAL_STATES:
        values["end_time"] = now
    if target == StateType.COMPLETED:
        values["result"] = result
    pairs = tuple((source, guards_of(source, target, state_name)) for source in sorted(sources))
    columns = tuple(sorted(values))
    also = returning.columns if returning is not None else ()
    shape = (target, pairs, tuple(g.name for g in guards), columns, returning.name if returning else None)
    statement = run_statements.transition(shape, columns, running,
                                          lambda: [_from_any(pairs), *(g.condition for g in guards)], also)
    params = run_statements.parameters(run_id, values, {NOW: now}, _params_of(guards))
    run = run_statements.run_row(session, statement, params)
    if run is None:
        return None
    # side effects of a committed-to transition: the state's row, then its event (services/emitted.py),
    # named by that row's id, in this transaction
    state_id, earlier = run_statements.add_state(session, run_id, target, state_name, message, now)
    if earlier:
        session.info.setdefault(_LEFT, {})[run_id] = (StateType(earlier[0].type), earlier[0].timestamp)
    events.record(session, [emitted.run_state_changed(session, run, state_id, earlier)])
    if target in (StateType.CRASHED, StateType.CANCELLED):
        open_task_runs.end_with_flow_run(session, run_id, target, now)
    return run


_LEFT = "orchestrator.transitions.left"  # session.info: run id -> the state its last transition left


def left_state(session: Session, run_id: uuid.UUID) -> tuple[StateType, dt.datetime] | None:
    """The state a transition written in this session moved ``run_id`` out of, and since when it
    was in it (the RUNNING report's PENDING -> RUNNING latency): the transition read it with its
    history row, so the caller needs no read of its own. None when no transition of the run was
    written in this session."""
    return session.info.get(_LEFT, {}).get(run_id)  # type: ignore[no-any-return]


def _from_any(pairs: Sequence[tuple[StateType, frozenset[str]]]) -> ColumnElement[bool]:
    """``state_type IN (sources)``, each source with the guards its pair to the target carries
    (``pairs``: each source and the names of those guards). The sources are a bind parameter
    each, their values kept in the statement (they are part of its shape): ``in_`` of a list of
    values makes one "expanding" parameter, which SQLAlchemy renders into the statement's text
    again at every execution, ~25 µs of a RUNNING or final report (bench/RESULTS.md, issue 22,
    branch h1)."""
    plain = [literal(source, RUNS.state_type.type) for source, names in pairs if not names]
    clauses: list[ColumnElement[bool]] = [RUNS.state_type.in_(plain)] if plain else []
    for source, names in pairs:
        if names:
            clauses.append(and_(RUNS.state_type == source, *(_PAIR_GUARDS[g].condition for g in sorted(names))))
    return or_(*clauses) if clauses else RUNS.state_type.in_([])


def claim(session: Session, run_id: uuid.UUID, worker_name: str, *, now: dt.datetime | None = None) -> RunRow:
    """SCHEDULED -> PENDING for one worker; every other claimant gets ``InvalidTransition``, and
    a claim of a run not due yet ``Conflict`` (the update's own guard: the claim reads nothing first).

    A run its flow-run process still holds (``AwaitingRetry``) cannot be claimed: the pair's guard."""
    now = now or utcnow()
    try:
        return transition(session, run_id, StateType.PENDING, only_from=[StateType.SCHEDULED],
                          guards=[due(now)], effects=[claimed_by(worker_name)], now=now)
    except InvalidTransition:
        run = run_statements.read(session, run_id)
        if run.expected_start_time > now + CLAIM_EARLY:
            raise Conflict(f"flow run {run_id} is not due until {run.expected_start_time.isoformat()}") from None
        raise


def due(now: dt.datetime) -> Guard:
    """Only a run due by ``now`` (``CLAIM_EARLY`` early at most): a claim's guard."""
    return Guard("due", _DUE, {"due_by": now + CLAIM_EARLY})


CLAIM_EARLY = dt.timedelta(seconds=1)  # a claim this early is due all the same: clocks differ
_DUE = RUNS.expected_start_time <= bindparam("due_by")


def reschedule(
    session: Session, run_id: uuid.UUID, *, name: str, message: str, when: dt.datetime | None = None,
    only_from: Iterable[StateType] | None = None, guards: Sequence[Guard] = (), effects: Sequence[Effect] = (),
    now: dt.datetime | None = None,
) -> RunRow:
    """Back to SCHEDULED, free for any worker to claim once due (the dispatcher publishes it)."""
    now = now or utcnow()
    return transition(session, run_id, StateType.SCHEDULED, name=name, message=message, only_from=only_from,
                      guards=guards, effects=[released(when or now), *effects], now=now)


def await_retry(session: Session, run_id: uuid.UUID, *, when: dt.datetime, message: str | None,
                guards: Sequence[Guard] = ()) -> RunRow:
    """RUNNING -> SCHEDULED ``AwaitingRetry``: its flow-run process keeps holding the run (worker,
    slot) and retries it in-process at ``when``. Again from ``AwaitingRetry`` itself, so a repeated
    report is harmless; never from a run that waits for any worker (``states.INTO_HELD_GUARDS``)."""
    return transition(session, run_id, StateType.SCHEDULED, name=AWAITING_RETRY, message=message,
                      only_from=[StateType.RUNNING, StateType.SCHEDULED], guards=guards, effects=[retry_at(when)])


def give_back_retry(session: Session, run_id: uuid.UUID, *, message: str,
                    now: dt.datetime | None = None) -> RunRow:
    """A held run whose process is gone: ``AwaitingRestart`` at its retry time, free for any worker;
    CRASHED when no worker could start it (a flow called directly: no deployment to run)."""
    now = now or utcnow()
    run = run_statements.read(session, run_id)
    if run.deployment_id is None:
        return transition(session, run_id, StateType.CRASHED, message=message, only_from=[StateType.SCHEDULED],
                          guards=[HELD], now=now)
    return reschedule(session, run_id, name=AWAITING_RESTART, message=message, when=run.expected_start_time,
                      only_from=[StateType.SCHEDULED], guards=[HELD], now=now)


def crash(session: Session, run_id: uuid.UUID, message: str, *, only_from: Iterable[StateType] | None = None,
          guards: Sequence[Guard] = (), now: dt.datetime | None = None) -> RunRow:
    """CRASHED -- unless the deployment allows automatic restarts after a crash and some are left:
    then the run is rescheduled at once as AwaitingRestart (free for any worker), in the same
    guarded update, so a waiter never sees a CRASHED that is not final."""
    now = now or utcnow()
    run = run_statements.read(session, run_id)
    restarts_allowed = 0
    if run.deployment_id is not None:
        restarts_allowed = session.scalar(
            select(m.Deployment.crash_retries).where(m.Deployment.id == run.deployment_id)) or 0
    current = StateType(run.state_type)
    if run.crash_restarts < restarts_allowed and current in (StateType.PENDING, StateType.RUNNING):
        if guards and session.scalar(select(m.FlowRun.id).where(
                m.FlowRun.id == run_id, *(g.condition for g in guards)), _params_of(guards)) is None:
            raise InvalidTransition(f"flow run {run_id} is no longer held by the reporter")
        attempt = run.crash_restarts + 1
        return reschedule(
            session, run_id, name=AWAITING_RESTART,
            message=f"crashed ({message}); automatic restart {attempt} of {restarts_allowed}",
            only_from=[current], effects=[restarted(attempt)], now=now,
        )
    return transition(session, run_id, StateType.CRASHED, message=message, only_from=only_from, guards=guards,
                      now=now)


def cancel(session: Session, run_id: uuid.UUID) -> RunRow:
    """Runs not started yet are CANCELLED at once; started ones become CANCELLING for their worker."""
    run = run_statements.read(session, run_id)
    current = StateType(run.state_type)
    if current in FINAL_STATES:
        raise InvalidTransition(f"flow run {run_id} is already {current}")
    if current == StateType.CANCELLING:
        return run
    if is_held(current, run.state_name):
        # Waiting for an in-process retry: its process is alive and must be stopped.
        return transition(session, run_id, StateType.CANCELLING, only_from=[StateType.SCHEDULED])
    if current in (StateType.SCHEDULED, StateType.PENDING):
        try:
            return transition(session, run_id, StateType.CANCELLED, only_from=[StateType.SCHEDULED, StateType.PENDING],
                              message="cancelled before it started")
        except InvalidTransition:
            pass  # it started meanwhile
    return transition(session, run_id, StateType.CANCELLING)


def set_state(session: Session, run_id: uuid.UUID, request: schemas.StateCreate, *,
              infrastructure_id: str | None = None) -> RunRow:
    """A state reported by a worker or a flow-run process. ``infrastructure_id`` (RUNNING only): where
    the reporting process runs, written with the state (``located``)."""
    if request.result is not None and len(json.dumps(request.result, default=str)) > RESULT_MAX_BYTES:
        raise InvalidInput(
            [{"loc": ["body", "result"], "msg": f"result larger than {RESULT_MAX_BYTES} bytes", "type": "size"}]
        )
    # A flow-run process or worker reports for the claim it holds: once the run was given to
    # another worker (recovered after a lost lease), its reports no longer apply.
    reporter = [] if request.worker_name is None else [holder(request.worker_name)]
    if request.type == StateType.CRASHED:
        return crash(session, run_id, request.message or "crashed", guards=reporter)
    if request.type == StateType.SCHEDULED:
        # From a flow-run process: an in-process retry; it keeps holding the run.
        if request.name not in (None, AWAITING_RETRY):
            raise InvalidInput([{"loc": ["body", "name"], "type": "value_error",
                                 "msg": f"a reported SCHEDULED state is an in-process retry, named {AWAITING_RETRY}"}])
        return await_retry(session, run_id, when=request.scheduled_time or utcnow(), message=request.message,
                           guards=reporter)
    # SCHEDULED -> RUNNING is for the process holding the run between retries: the pair's guard.
    effects = [loaded(request.flow_version, request.flow_run_name)] if request.type == StateType.RUNNING else []
    if effects and infrastructure_id is not None:
        effects.append(located(infrastructure_id))
    return transition(session, run_id, request.type, name=request.name, message=request.message,
                      result=request.result, guards=reporter, effects=effects)
