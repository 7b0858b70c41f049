"""The scheduler service: creates each active schedule's runs ahead, names overdue runs ``Late``,
and applies each deployment's catch-up policy.

Horizon (Prefect's defaults, settings): per schedule, at least ``min_runs`` runs and ``min_time``
ahead, at most ``max_runs`` runs and ``max_time`` ahead.

Safe with any number of replicas: a run's idempotency key is unique per (deployment, schedule,
time), so racing passes insert each run once; on PostgreSQL a pass also skips schedule rows another
replica holds (``FOR UPDATE SKIP LOCKED``). A pass writes a schedule's runs only if the schedule's
``version`` is still the one it read, so a change racing a pass never leaves runs of the old
definition behind.

It sleeps until the next run turns Late or ``loop_seconds`` passed, and wakes at once when a
transaction in this process changes a schedule or a deployment (an ``after_commit`` hook on the
sessionmaker; ``services.schedules.mark_changed``). The periodic pass covers other replicas.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db import models as m
from orchestrator.db.types import utcnow
from orchestrator.errors import InvalidInput, InvalidTransition, NotFound
from orchestrator.schedules import ScheduleError, Spec, iter_times
from orchestrator.services import schedules as svc
from orchestrator.services import transitions
from orchestrator.services.parameters import validate_parameters
from orchestrator.settings import Settings
from orchestrator.states import DEFAULT_NAMES, StateType

log = logging.getLogger("orchestrator.scheduler")

CHUNK = 500
LATE = "Late"
SCHEDULED = DEFAULT_NAMES[StateType.SCHEDULED]
FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Horizon:
    min_runs: int = 3
    min_time: dt.timedelta = dt.timedelta(hours=1)
    max_runs: int = 100
    max_time: dt.timedelta = dt.timedelta(days=100)

    @classmethod
    def from_settings(cls, settings: Settings) -> Horizon:
        return cls(settings.scheduler_min_runs, dt.timedelta(seconds=settings.scheduler_min_horizon_seconds),
                   settings.scheduler_max_runs, dt.timedelta(seconds=settings.scheduler_max_horizon_seconds))


def plan_times(spec: Spec, now: dt.datetime, horizon: Horizon) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The times to have runs for, from ``now``: until both minimums are met, within both maximums.
    Also returns the first time left out (None if the schedule ends)."""
    wanted: list[dt.datetime] = []
    for when in iter_times(spec, now):
        full = len(wanted) >= horizon.min_runs and when > now + horizon.min_time
        if full or len(wanted) >= horizon.max_runs or when > now + horizon.max_time:
            return wanted, when
        wanted.append(when)
    return wanted, None


def last_times(spec: Spec, after: dt.datetime, before: dt.datetime, count: int) -> list[dt.datetime]:
    """The latest ``count`` times in ``(after, before)``, looking back in growing windows so a
    long downtime of a frequent schedule is not walked minute by minute."""
    window = dt.timedelta(hours=1)
    while True:
        start = max(after + dt.timedelta(microseconds=1), before - window)
        found: collections.deque[dt.datetime] = collections.deque(maxlen=count)
        for when in iter_times(spec, start):
            if when >= before:
                break
            found.append(when)
        if len(found) >= count or start <= after + dt.timedelta(microseconds=1):
            return list(found)
        window *= 8


@dataclass
class PassResult:
    created: int = 0
    late: int = 0
    skipped: int = 0
    seconds: float = 0.0


@dataclass
class _Plan:
    schedule: m.DeploymentSchedule
    deployment: m.Deployment
    times: list[dt.datetime]
    until: dt.datetime | None


@dataclass
class _Seen:
    version: int
    until: dt.datetime | None
    recheck_at: dt.datetime
    valid: bool = field(default=False)  # its parameters passed the deployment's schema


class Scheduler:
    def __init__(self, sessions: sessionmaker[Session], *, horizon: Horizon = Horizon(), late_after: float = 15.0,
                 loop_seconds: float = 5.0, on_created: Callable[[], None] | None = None) -> None:
        self.sessions = sessions
        self.horizon = horizon
        self.late_after = dt.timedelta(seconds=late_after)
        self.loop_seconds = loop_seconds
        self.on_created = on_created
        self._seen: dict[uuid.UUID, _Seen] = {}
        self.passes = 0  # completed passes of the loop
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, sessions: sessionmaker[Session], settings: Settings,
                      on_created: Callable[[], None] | None = None) -> Scheduler:
        return cls(sessions, horizon=Horizon.from_settings(settings), late_after=settings.scheduler_late_after_seconds,
                   loop_seconds=settings.scheduler_loop_seconds, on_created=on_created)

    # --- one pass ----------------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> PassResult:
        began = time.perf_counter()
        now = now or utcnow()
        result = PassResult(late=self.mark_late(now))
        result.created = self.fill(now)
        result.skipped = self.apply_catchup(now)
        if result.created and self.on_created is not None:
            self.on_created()
        result.seconds = time.perf_counter() - began
        return result

    def mark_late(self, now: dt.datetime) -> int:
        """SCHEDULED runs more than ``late_after`` past their time become ``Late`` (any run, as in
        Prefect; other SCHEDULED names such as AwaitingConcurrencySlot are left alone)."""
        run = m.FlowRun
        overdue = select(run.id).where(run.state_type == StateType.SCHEDULED,
                                       run.state_name == DEFAULT_NAMES[StateType.SCHEDULED],
                                       run.expected_start_time < now - self.late_after)
        with self.sessions() as session:
            if session.scalar(overdue.limit(1)) is None:
                return 0  # the usual case: no write lock taken
        marked = 0
        while True:
            with self.sessions.begin() as session:
                query = overdue.order_by(run.expected_start_time).limit(CHUNK)
                ids = list(session.scalars(_skip_locked(session, query)))
                for run_id in ids:
                    try:  # guarded on the name too: a run just named AwaitingConcurrencySlot stays so
                        transitions.transition(session, run_id, StateType.SCHEDULED, name=LATE,
                                               only_from=[StateType.SCHEDULED], where=[run.state_name == SCHEDULED],
                                               now=now)
                        marked += 1
                    except (InvalidTransition, NotFound):
                        pass
            if len(ids) < CHUNK:
                return marked

    def fill(self, now: dt.datetime) -> int:
        """Create the runs each active schedule of an unpaused deployment lacks within the horizon."""
        table = m.DeploymentSchedule
        with self.sessions() as session:
            rows = session.execute(
                select(table.id, table.version, table.scheduled_until).join(m.Deployment)
                .where(table.active.is_(True), m.Deployment.paused.is_(False))).all()
        live = {row[0] for row in rows}
        for gone in set(self._seen) - live:
            del self._seen[gone]
        due = [row[0] for row in rows if self._needs_work(row[0], row[1], row[2], now)]
        created = 0
        for start in range(0, len(due), CHUNK):
            created += self._fill_chunk(sorted(due[start:start + CHUNK]), now)
        return created

    def _needs_work(self, schedule_id: uuid.UUID, version: int, until: dt.datetime | None, now: dt.datetime) -> bool:
        seen = self._seen.get(schedule_id)
        return seen is None or seen.version != version or seen.until != until or seen.recheck_at <= now

    def _fill_chunk(self, ids: Sequence[uuid.UUID], now: dt.datetime) -> int:
        table = m.DeploymentSchedule
        with self.sessions.begin() as session:
            lock = select(table.id).where(table.id.in_(ids)).order_by(table.id)
            ids = list(session.scalars(_skip_locked(session, lock)))
            pairs = session.execute(select(table, m.Deployment).join(m.Deployment).where(
                table.id.in_(ids), table.active.is_(True), m.Deployment.paused.is_(False))).all()
            queues = dict(session.execute(select(m.WorkPool.name, m.WorkPool.default_queue_name)).all())
            plans = [p for p in (self._plan(s, d, queues, now) for s, d in pairs) if p is not None]
            applied = self._advance(session, plans)
            rows = []
            for plan in plans:
                if plan.schedule.id not in applied:
                    continue
                queue = plan.deployment.work_queue_name or queues[plan.deployment.work_pool_name]
                rows.extend(svc.run_row(plan.deployment, queue, plan.schedule.slug, when, plan.schedule.parameters,
                                        now) for when in plan.times)
            return svc.insert_runs(session, rows, now)

    def _plan(self, schedule: m.DeploymentSchedule, deployment: m.Deployment, queues: dict[str, str],
              now: dt.datetime) -> _Plan | None:
        try:
            spec = svc.spec_of(schedule)
        except ScheduleError as error:  # stored before a rule changed; say so, keep the rest going
            log.warning("deployment %s: %s", deployment.name, error)
            return None
        seen = self._seen.get(schedule.id)
        valid = seen is not None and seen.version == schedule.version and seen.valid
        if not valid and not self._parameters_ok(schedule, deployment):
            return None
        if deployment.work_pool_name not in queues:
            log.warning("deployment %s: work pool '%s' not found; no runs scheduled", deployment.name,
                        deployment.work_pool_name)
            return None
        wanted, left_out = plan_times(spec, now, self.horizon)
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
        self._seen[schedule.id] = _Seen(schedule.version, new_until, recheck, valid=True)
        if not times and new_until == until:
            return None
        return _Plan(schedule, deployment, times, new_until)

    def _parameters_ok(self, schedule: m.DeploymentSchedule, deployment: m.Deployment) -> bool:
        if not deployment.enforce_parameter_schema:
            return True
        try:
            validate_parameters(deployment.parameter_openapi_schema, {**deployment.parameters, **schedule.parameters})
        except InvalidInput as error:
            log.warning("deployment %s, schedule %s: parameters no longer valid, no runs: %s", deployment.name,
                        schedule.slug, error)
            return False
        return True

    def _advance(self, session: Session, plans: Sequence[_Plan]) -> set[uuid.UUID]:
        """Move each schedule's ``scheduled_until`` -- only where its version is still the one the
        plan was computed from. This write comes first: on SQLite it takes the database's write
        lock, on PostgreSQL the rows are locked already, so nothing changes them before commit."""
        if not plans:
            return set()
        table = m.DeploymentSchedule.__table__
        statement = (update(table).where(table.c.id == bindparam("_id"), table.c.version == bindparam("_version"))
                     .values(scheduled_until=bindparam("_until"), updated=table.c.updated))  # not a user edit
        params = [{"_id": p.schedule.id, "_version": p.schedule.version, "_until": p.until} for p in plans]
        result = session.connection().execute(statement, params)
        if result.rowcount == len(params):
            return {p.schedule.id for p in plans}
        current = dict(session.execute(select(table.c.id, table.c.version).where(
            table.c.id.in_([p.schedule.id for p in plans]))).all())
        return {p.schedule.id for p in plans if current.get(p.schedule.id) == p.schedule.version}

    def apply_catchup(self, now: dt.datetime) -> int:
        """Cancel the Late auto-scheduled runs a deployment's policy does not want: NONE keeps none,
        LATEST the newest per schedule; ``max_late_runs`` caps what is left (newest kept)."""
        deployment = m.Deployment
        with self.sessions() as session:
            policies = {row[0]: (row[1], row[2]) for row in session.execute(
                select(deployment.id, deployment.catchup, deployment.max_late_runs).where(
                    (deployment.catchup != "ALL") | deployment.max_late_runs.is_not(None)))}
        skipped = 0
        ids = sorted(policies)
        for start in range(0, len(ids), CHUNK):
            with self.sessions.begin() as session:
                skipped += self._catchup_chunk(session, {i: policies[i] for i in ids[start:start + CHUNK]}, now)
        return skipped

    def _catchup_chunk(self, session: Session, policies: dict[uuid.UUID, tuple[str, int | None]],
                       now: dt.datetime) -> int:
        run = m.FlowRun
        query = (select(run.id, run.deployment_id, run.idempotency_key, run.tags)
                 .where(run.deployment_id.in_(list(policies)), run.state_type == StateType.SCHEDULED,
                        run.state_name == LATE, run.idempotency_key.startswith(svc.KEY_PREFIX))
                 .order_by(run.expected_start_time.desc(), run.id))
        kept: dict[Any, int] = collections.Counter()
        doomed: list[tuple[uuid.UUID, str]] = []
        for run_id, deployment_id, key, tags in session.execute(_skip_locked(session, query)):
            if svc.AUTO_TAG not in tags or svc.BACKFILL_TAG in tags:
                continue
            policy, cap = policies[deployment_id]
            slug = key.split(":", 2)[1]
            if policy == "NONE":
                doomed.append((run_id, "missed its time; the deployment's catch-up policy is NONE"))
            elif policy == "LATEST" and kept[(deployment_id, slug)]:
                doomed.append((run_id, f"a later run of schedule '{slug}' is also late; catch-up policy LATEST"))
            elif cap is not None and kept[deployment_id] >= cap:
                doomed.append((run_id, f"more than {cap} late runs (the deployment's max_late_runs)"))
            else:
                kept[(deployment_id, slug)] += 1
                kept[deployment_id] += 1
        skipped = 0
        for run_id, reason in doomed:
            try:
                transitions.transition(session, run_id, StateType.CANCELLED, only_from=[StateType.SCHEDULED],
                                       where=[m.FlowRun.state_name == LATE], message=f"Skipped: {reason}.", now=now)
                skipped += 1
            except (InvalidTransition, NotFound):
                pass  # started or gone meanwhile
        return skipped

    def seconds_until_next(self, now: dt.datetime) -> float:
        """Until the next run turns Late or a schedule needs more runs, at most ``loop_seconds``."""
        run = m.FlowRun
        with self.sessions() as session:
            oldest = session.scalar(select(func.min(run.expected_start_time)).where(
                run.state_type == StateType.SCHEDULED, run.state_name == DEFAULT_NAMES[StateType.SCHEDULED]))
        waits = [self.loop_seconds]
        if oldest is not None:
            waits.append((oldest + self.late_after - now).total_seconds() + 0.01)
        if self._seen:
            waits.append((min(s.recheck_at for s in self._seen.values()) - now).total_seconds())
        return max(0.05, min(waits))

    # --- the loop ----------------------------------------------------------------------------

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                result = self.run_once()
                if result.created or result.late or result.skipped:
                    log.info("scheduler: %d runs created, %d late, %d skipped in %.2f s", result.created,
                             result.late, result.skipped, result.seconds)
                wait = self.seconds_until_next(utcnow())
                self.passes += 1
            except Exception:  # the database may be down for a while: keep trying
                log.exception("scheduler pass failed")
                wait = 1.0
            self._wake.wait(timeout=wait)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(svc.CHANGED, False):
            self._wake.set()

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(svc.CHANGED, None)

    def start(self) -> None:
        event.listen(self.sessions, "after_commit", self._after_commit)
        event.listen(self.sessions, "after_rollback", self._after_rollback)
        self._thread = threading.Thread(target=self.run_forever, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            event.remove(self.sessions, "after_commit", self._after_commit)
            event.remove(self.sessions, "after_rollback", self._after_rollback)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()


def _skip_locked(session: Session, query: Any) -> Any:
    """PostgreSQL: lock what we read and skip rows another replica holds."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query

