"""Runs ahead: each scheduler pass creates the runs every active schedule of an unpaused
deployment lacks within the horizon, and remembers per schedule when it needs looking at again.

Horizon (Prefect's defaults, settings): per schedule, at least ``min_runs`` runs and ``min_time``
ahead, at most ``max_runs`` runs and ``max_time`` ahead. After downtime, the runs missed since a
schedule's ``scheduled_until`` are created as the deployment's catch-up policy asks (the pass then
names them Late and cancels those the policy does not keep, ``orchestrator/server/catchup.py``).

Safe with any number of replicas: a run's idempotency key is unique per (deployment, schedule,
time), so racing passes insert each run once; on PostgreSQL a pass also skips schedule rows another
replica holds (``FOR UPDATE SKIP LOCKED``). A pass writes a schedule's runs only if the schedule's
``version`` is still the one it read, so a change racing a pass never leaves runs of the old
definition behind.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import InvalidInput
from orchestrator.schedules import ScheduleError, Spec
from orchestrator.schedules.horizon import Horizon, last_times, plan_times
from orchestrator.server.db import models as m
from orchestrator.server.db.types import among, pg_array
from orchestrator.server.services import schedules as svc
from orchestrator.server.services.new_runs import Series, insert_series
from orchestrator.server.services.parameters import validate_parameters

log = logging.getLogger("orchestrator.scheduler")

SCHEDULES_PER_CHUNK = 500  # schedules filled in one transaction
PARALLEL = 2
FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)

_S = m.DeploymentSchedule
_D = m.Deployment
# What a pass reads: only the columns it uses (whole ORM rows cost a JSON decode per column).
_PLAN_COLUMNS = (
    _S.id, _S.slug, _S.schedule, _S.timezone, _S.version, _S.scheduled_until, _S.parameters,
    _D.id.label("deployment_id"), _D.name.label("deployment_name"), _D.flow_id, _D.version.label("deployment_version"),
    _D.work_pool_name, _D.work_queue_name, _D.parameters.label("deployment_parameters"), _D.tags, _D.catchup,
    _D.max_late_runs, _D.enforce_parameter_schema, _D.parameter_openapi_schema,
)


@dataclass(frozen=True)
class _Schedule:
    id: uuid.UUID
    slug: str
    schedule: dict[str, Any]
    timezone: str
    version: int
    scheduled_until: dt.datetime | None
    parameters: dict[str, Any]

    @classmethod
    def of(cls, row: Any) -> _Schedule:
        return cls(row.id, row.slug, row.schedule, row.timezone, row.version, row.scheduled_until, row.parameters)


@dataclass(frozen=True)
class _Target:
    """The deployment, as far as creating its runs goes (``services.schedules.RunSource``)."""

    id: uuid.UUID
    name: str
    flow_id: uuid.UUID
    version: str | None
    work_pool_name: str
    work_queue_name: str | None
    parameters: dict[str, Any]
    tags: list[str]
    catchup: str
    max_late_runs: int | None
    enforce_parameter_schema: bool

    @classmethod
    def of(cls, row: Any) -> _Target:
        return cls(row.deployment_id, row.deployment_name, row.flow_id, row.deployment_version, row.work_pool_name,
                   row.work_queue_name, row.deployment_parameters, row.tags, row.catchup, row.max_late_runs,
                   row.enforce_parameter_schema)


@dataclass
class _Plan:
    schedule: _Schedule
    deployment: _Target
    times: list[dt.datetime]
    until: dt.datetime | None


@dataclass
class _Seen:
    version: int
    until: dt.datetime | None
    recheck_at: dt.datetime
    spec: Spec
    valid: bool = field(default=False)  # its parameters passed the deployment's schema


class RunsAhead:
    """The scheduler's filling of its horizon, with what it keeps between passes: per schedule the
    version and ``scheduled_until`` last seen, its parsed timing and when it needs more runs (a
    schedule unchanged and not yet due is not read again)."""

    def __init__(self, sessions: sessionmaker[Session], horizon: Horizon) -> None:
        self.sessions = sessions
        self.horizon = horizon
        self._seen: dict[uuid.UUID, _Seen] = {}
        self._times: dict[tuple[Spec, dt.datetime], tuple[list[dt.datetime], dt.datetime | None]] = {}

    def next_recheck(self) -> dt.datetime | None:
        """When the first schedule seen needs more runs; None before the first pass."""
        return min((seen.recheck_at for seen in self._seen.values()), default=None)

    def fill(self, now: dt.datetime) -> int:
        """Create the runs each active schedule of an unpaused deployment lacks within the horizon."""
        table = m.DeploymentSchedule
        with self.sessions() as session:
            rows = session.execute(
                select(table.id, table.version, table.scheduled_until).join(m.Deployment)
                .where(table.active.is_(True), m.Deployment.paused.is_(False))).all()
        self._times.clear()
        live = {row[0] for row in rows}
        for gone in set(self._seen) - live:
            del self._seen[gone]
        due = [row[0] for row in rows if self._needs_work(row[0], row[1], row[2], now)]
        if len(due) > SCHEDULES_PER_CHUNK:
            due = self._soonest_first(due, now)
        chunks = [sorted(due[start:start + SCHEDULES_PER_CHUNK]) for start in range(0, len(due), SCHEDULES_PER_CHUNK)]
        if PARALLEL > 1 and len(chunks) > 1 and self.sessions.kw["bind"].dialect.name == "postgresql":
            # Chunks lock disjoint rows: two connections keep the server's inserts on two cores
            # while this process builds the next chunk (SQLite has one writer anyway).
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="scheduler-fill") as pool:
                return sum(pool.map(lambda chunk: self._fill_chunk(chunk, now), chunks))
        return sum(self._fill_chunk(chunk, now) for chunk in chunks)

    def _soonest_first(self, due: Sequence[uuid.UUID], now: dt.datetime) -> list[uuid.UUID]:
        """``due`` in the order their next missing runs come due: a pass of many chunks (a first
        start over 100,000 deployments takes a while) writes first the runs needed first."""
        wanted = set(due)
        with self.sessions() as session:
            rows = [row for row in session.execute(select(_S.id, _S.slug, _S.schedule, _S.timezone,
                                                          _S.scheduled_until)) if row.id in wanted]

        def due_at(row: Any) -> dt.datetime:
            if row.scheduled_until is not None:  # runs exist up to then (missed since, if past)
                return row.scheduled_until
            try:
                spec = _spec_of(_Schedule(row.id, row.slug, row.schedule, row.timezone, 0, None, {}))
            except ScheduleError:
                return now  # its plan fails at once, saying why
            times = self._planned(spec, now)[0]
            return times[0] if times else FOREVER

        return [row.id for row in sorted(rows, key=due_at)]

    def _planned(self, spec: Spec, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime | None]:
        """``plan_times`` once per timing and pass (100,000 deployments are typically a few dozen
        distinct timings)."""
        planned = self._times.get((spec, now))
        if planned is None:
            planned = self._times[(spec, now)] = plan_times(spec, now, self.horizon)
        return planned

    def _needs_work(self, schedule_id: uuid.UUID, version: int, until: dt.datetime | None, now: dt.datetime) -> bool:
        seen = self._seen.get(schedule_id)
        return seen is None or seen.version != version or seen.until != until or seen.recheck_at <= now

    def _fill_chunk(self, ids: Sequence[uuid.UUID], now: dt.datetime) -> int:
        with self.sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":
                # What a pass writes can always be written again (keys, scheduled_until in the
                # same transaction), so it need not wait for the WAL flush: a database crash
                # loses at most the last passes' work, whole, and the next pass redoes it.
                session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            read = (select(*_PLAN_COLUMNS).join(_D).where(among(_S.id, ids, dialect), _S.active.is_(True),
                                                         _D.paused.is_(False)).order_by(_S.id))
            if dialect == "postgresql":  # the schedule rows, in one order; those another replica holds skipped
                read = read.with_for_update(skip_locked=True, of=_S)
            rows = session.execute(read).all()
            queues = dict(session.execute(select(m.WorkPool.name, m.WorkPool.default_queue_name)).all())
            plans = [p for p in (self._plan(_Schedule.of(r), _Target.of(r), r.parameter_openapi_schema, queues, now)
                                 for r in rows) if p is not None]
            applied = self._advance(session, plans)
            series = []
            for plan in plans:
                if plan.schedule.id not in applied or not plan.times:
                    continue
                queue = plan.deployment.work_queue_name or queues[plan.deployment.work_pool_name]
                template = svc.run_row(plan.deployment, queue, plan.schedule.slug, plan.times[0],
                                       plan.schedule.parameters, now)
                series.append(Series(template, [(when, svc.run_key(plan.schedule.slug, when)) for when in plan.times]))
            return insert_series(session, series)

    def _plan(self, schedule: _Schedule, deployment: _Target, parameter_schema: dict[str, Any],
              queues: dict[str, str], now: dt.datetime) -> _Plan | None:
        seen = self._seen.get(schedule.id)
        if seen is not None and seen.version == schedule.version:
            spec, valid = seen.spec, seen.valid
        else:
            try:
                spec, valid = _spec_of(schedule), False
            except ScheduleError as error:  # stored before a rule changed; say so, keep the rest going
                log.warning("deployment %s: %s", deployment.name, error)
                return None
        if not valid and not _parameters_ok(schedule, deployment, parameter_schema):
            return None
        if deployment.work_pool_name not in queues:
            log.warning("deployment %s: work pool '%s' not found; no runs scheduled", deployment.name,
                        deployment.work_pool_name)
            return None
        wanted, left_out = self._planned(spec, now)
        until = schedule.scheduled_until
        missed: list[dt.datetime] = []
        if until is not None and until < now and deployment.catchup != "NONE":
            count = 1 if deployment.catchup == "LATEST" else min(deployment.max_late_runs or self.horizon.max_runs,
                                                                 self.horizon.max_runs)
            missed = last_times(spec, until, now, count)
        times = missed + [t for t in wanted if until is None or t > until]
        new_until = max([t for t in (until, *wanted) if t is not None], default=None)
        recheck = min(wanted[0] if wanted else FOREVER,
                      left_out - self.horizon.min_time if left_out is not None else FOREVER)
        self._seen[schedule.id] = _Seen(schedule.version, new_until, recheck, spec, valid=True)
        if not times and new_until == until:
            return None
        return _Plan(schedule, deployment, times, new_until)

    def _advance(self, session: Session, plans: Sequence[_Plan]) -> set[uuid.UUID]:
        """Move each schedule's ``scheduled_until`` -- only where its version is still the one the
        plan was computed from -- and return the schedules moved. This write comes first: on
        SQLite it takes the database's write lock, on PostgreSQL the rows are locked already, so
        nothing changes them before commit."""
        if not plans:
            return set()
        if session.get_bind().dialect.name == "postgresql":
            moved = session.execute(text(
                "UPDATE deployment_schedules AS s SET scheduled_until = v.until FROM unnest("
                "CAST(:ids AS UUID[]), CAST(:versions AS INTEGER[]), CAST(:untils AS TIMESTAMP WITH TIME ZONE[])"
                ") AS v(id, version, until) WHERE s.id = v.id AND s.version = v.version RETURNING s.id"),
                {"ids": pg_array(p.schedule.id for p in plans), "versions": pg_array(p.schedule.version for p in plans),
                 "untils": pg_array(p.until for p in plans)})
            return set(moved.scalars())
        table = _S.__table__
        statement = (update(table).where(table.c.id == bindparam("_id"), table.c.version == bindparam("_version"))
                     .values(scheduled_until=bindparam("_until"), updated=table.c.updated))  # not a user edit
        params = [{"_id": p.schedule.id, "_version": p.schedule.version, "_until": p.until} for p in plans]
        result = session.connection().execute(statement, params)
        if result.rowcount == len(params):
            return {p.schedule.id for p in plans}
        current = dict(session.execute(select(table.c.id, table.c.version).where(
            table.c.id.in_([p.schedule.id for p in plans]))).all())
        return {p.schedule.id for p in plans if current.get(p.schedule.id) == p.schedule.version}




@functools.lru_cache(maxsize=4096)
def _spec_of_timing(timing: tuple[tuple[str, Any], ...], timezone: str) -> Spec:
    return svc.spec_of(_Timing("", dict(timing), timezone))


@dataclass(frozen=True)
class _Timing:
    slug: str
    schedule: dict[str, Any]
    timezone: str


def _spec_of(schedule: _Schedule) -> Spec:
    """``services.schedules.spec_of``, parsed once per distinct timing (a spec holds no slug; the
    slug only names the schedule in an error, and errors are not cached)."""
    try:
        return _spec_of_timing(tuple(sorted(schedule.schedule.items())), schedule.timezone)
    except (ScheduleError, TypeError):  # TypeError: an unhashable value; parse it as it is, naming it
        return svc.spec_of(schedule)


def _parameters_ok(schedule: _Schedule, deployment: _Target, schema: dict[str, Any]) -> bool:
    if not deployment.enforce_parameter_schema:
        return True
    try:
        validate_parameters(schema, {**deployment.parameters, **schedule.parameters})
    except InvalidInput as error:
        log.warning("deployment %s, schedule %s: parameters no longer valid, no runs: %s", deployment.name,
                    schedule.slug, error)
        return False
    return True
