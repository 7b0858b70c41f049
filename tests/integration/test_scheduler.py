"""The scheduler service on SQLite and PostgreSQL: runs ahead, racing replicas, the reset rules,
Late, catch-up policies and backfill."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import event, func, select

from orchestrator import schemas
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.schedules.horizon import Horizon
from orchestrator.server import runs_ahead
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker
from orchestrator.server.hub.local import LocalHub
from orchestrator.server.scheduler import Scheduler, announce_changes
from orchestrator.server.services import deployments, flow_runs, transitions, work_pools
from orchestrator.server.services import schedules as svc
from orchestrator.states import StateType
from tests.harness import wait_until

# A fixed "now" on a round hour: interval schedules (anchored at 2020-01-01) land on round times.
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


class World:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        with sessions.begin() as session:
            work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))

    def deploy(self, name: str = "d", schedules: list[dict[str, Any]] | None = None, **fields: Any) -> uuid.UUID:
        with self.sessions.begin() as session:
            deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
                flow_name="f", name=name, entrypoint="f.py:f", work_pool_name="p",
                schedules=schedules if schedules is not None else [{"interval": 3600, "slug": "hourly"}], **fields))
            return deployment.id

    def update(self, deployment_id: uuid.UUID, **changes: Any) -> None:
        with self.sessions.begin() as session:
            deployments.update(session, deployment_id, schemas.DeploymentUpdate(**changes))

    def runs(self, deployment_id: uuid.UUID | None = None) -> list[m.FlowRun]:
        with self.sessions() as session:
            query = select(m.FlowRun).order_by(m.FlowRun.expected_start_time, m.FlowRun.idempotency_key)
            if deployment_id is not None:
                query = query.where(m.FlowRun.deployment_id == deployment_id)
            return list(session.scalars(query))

    def scheduled(self, deployment_id: uuid.UUID) -> list[m.FlowRun]:
        return [r for r in self.runs(deployment_id) if r.state_type == StateType.SCHEDULED]

    def manual_run(self, deployment_id: uuid.UUID, when: dt.datetime) -> uuid.UUID:
        with self.sessions.begin() as session:
            run, _ = flow_runs.create(session, deployment_id,
                                      schemas.FlowRunCreate(scheduled_time=when), now=T0)
            return run.id


@pytest.fixture
def world(sessions: Any) -> World:
    return World(sessions)


def times(runs: list[m.FlowRun]) -> list[str]:
    return [r.expected_start_time.strftime("%d %H:%M") for r in runs]


# --- runs ahead --------------------------------------------------------------------------------


def test_runs_ahead_within_the_horizon_tagged_and_keyed(world: World) -> None:
    hourly = world.deploy("hourly", parameters={"x": 1}, tags=["etl"])
    minutely = world.deploy("minutely", [{"interval": 60, "slug": "m", "parameters": {"x": 2}}])
    result = Scheduler(world.sessions).run_once(T0)
    assert result.created == 3 + 61
    runs = world.runs(hourly)
    assert times(runs) == ["01 12:00", "01 13:00", "01 14:00"]  # at least 3 runs
    assert len(world.runs(minutely)) == 61  # and at least an hour: 12:00 through 13:00
    first = runs[0]
    assert first.tags == ["auto-scheduled", "etl"]
    assert first.idempotency_key == "scheduled:hourly:2030-01-01T12:00:00Z"
    assert first.parameters == {"x": 1} and world.runs(minutely)[0].parameters == {"x": 2}
    assert (first.state_type, first.state_name, first.work_queue_name) == ("SCHEDULED", "Scheduled", "default")
    # Nothing more until time moves on; then only the missing tail is added.
    assert Scheduler(world.sessions).run_once(T0).created == 0
    # 12:01: the minutely one gains 13:01; the hourly one 15:00 (12:00 no longer counts as ahead).
    assert Scheduler(world.sessions).run_once(T0 + dt.timedelta(minutes=1)).created == 2


def test_a_pass_of_many_chunks_writes_the_runs_due_first_first(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs_ahead, "SCHEDULES_PER_CHUNK", 1)
    monkeypatch.setattr(runs_ahead, "PARALLEL", 1)  # chunks one after the other: a strict order
    minutes = [50, 10, 30, 5]
    ids = {minute: world.deploy(f"at-{minute}", [{"cron": f"{minute} * * * *"}]) for minute in minutes}
    assert Scheduler(world.sessions).run_once(T0).created == 3 * len(minutes)  # as in one chunk
    with world.sessions() as session:
        stored = dict(session.execute(select(m.Event.resource_id, m.Event.seq)).all())

    def written(deployment_id: uuid.UUID) -> int:  # events are stored in the order runs are written
        return min(stored[f"orchestrator.flow-run.{run.id}"] for run in world.runs(deployment_id))

    assert sorted(minutes, key=lambda minute: written(ids[minute])) == [5, 10, 30, 50]


def test_horizon_settings_bound_the_runs(world: World) -> None:
    world.deploy("every-second", [{"interval": 1}])
    scheduler = Scheduler(world.sessions, horizon=Horizon(min_runs=5, min_time=HOUR, max_runs=20))
    assert scheduler.run_once(T0).created == 20


def test_paused_deployments_inactive_schedules_and_missing_pools_get_no_runs(world: World) -> None:
    world.deploy("paused", paused=True)
    world.deploy("inactive", [{"cron": "* * * * *", "active": False}])
    orphan = world.deploy("orphan")
    with world.sessions.begin() as session:
        session.get(m.Deployment, orphan).work_pool_name = "gone"
    assert Scheduler(world.sessions).run_once(T0).created == 0


def test_two_schedulers_racing_never_create_a_duplicate(world: World, database_url: str) -> None:
    ids = [world.deploy(f"d{i}", [{"interval": 600, "slug": "a"}, {"cron": "*/5 * * * *", "slug": "b"}])
           for i in range(20)]
    engines = [make_engine(database_url) for _ in range(2)]
    schedulers = [Scheduler(make_sessionmaker(engine)) for engine in engines]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def race(scheduler: Scheduler) -> None:
        try:
            for minute in range(3):
                barrier.wait(timeout=30)
                scheduler.run_once(T0 + dt.timedelta(minutes=minute))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for engine in engines:
        engine.dispose()
    assert not errors
    for deployment_id in ids:
        runs = world.runs(deployment_id)
        per_schedule_time = {(r.idempotency_key.split(":")[1], r.expected_start_time) for r in runs}
        assert len(per_schedule_time) == len(runs)  # one run per (schedule, time)
        # 12:00 through 13:00: every 10 minutes (7) and every 5 minutes (13)
        assert sum(r.idempotency_key.startswith("scheduled:a:") for r in runs) == 7
        assert sum(r.idempotency_key.startswith("scheduled:b:") for r in runs) == 13


# --- the reset rules ---------------------------------------------------------------------------


def test_pausing_a_schedule_deletes_its_future_runs_and_resuming_recreates_them(world: World) -> None:
    deployment_id = world.deploy(schedules=[{"interval": 3600, "slug": "a"}, {"interval": 7200, "slug": "b"}])
    scheduler = Scheduler(world.sessions)
    manual = world.manual_run(deployment_id, T0 + 5 * HOUR)
    scheduler.run_once(T0)
    now = T0 + dt.timedelta(minutes=30)
    due = next(r for r in world.runs(deployment_id) if r.idempotency_key == "scheduled:a:2030-01-01T12:00:00Z")
    cancelled = next(r for r in world.runs(deployment_id) if r.idempotency_key == "scheduled:a:2030-01-01T14:00:00Z")
    with world.sessions.begin() as session:
        transitions.cancel(session, cancelled.id)
        deployment = session.get(m.Deployment, deployment_id)
        svc.update_(session, deployment, "a", schemas.ScheduleUpdate(active=False), now=now)
    left = {r.idempotency_key or str(r.id): r.state_type for r in world.runs(deployment_id)}
    assert "scheduled:a:2030-01-01T13:00:00Z" not in left  # future, not started: deleted
    assert left["scheduled:a:2030-01-01T12:00:00Z"] == "SCHEDULED"  # already due: kept
    assert left["scheduled:a:2030-01-01T14:00:00Z"] == "CANCELLED"  # not Scheduled any more: kept
    assert left[str(manual)] == "SCHEDULED"  # manual runs are never touched
    assert sum(k.startswith("scheduled:b:") for k in left) == 3  # the other schedule keeps its runs
    scheduler.run_once(now)
    a_runs = {k for k in (r.idempotency_key for r in world.runs(deployment_id)) if k and k.startswith("scheduled:a")}
    assert a_runs == {"scheduled:a:2030-01-01T12:00:00Z", "scheduled:a:2030-01-01T14:00:00Z"}  # paused: none new
    with world.sessions.begin() as session:
        svc.update_(session, session.get(m.Deployment, deployment_id), "a", schemas.ScheduleUpdate(active=True))
    assert scheduler.run_once(now).created == 2  # 13:00 recreated; 14:00 exists (cancelled); 15:00 new
    assert due.id in {r.id for r in world.runs(deployment_id)}


def test_updating_the_deployment_replaces_its_runs_and_a_same_redeploy_keeps_them(world: World) -> None:
    deployment_id = world.deploy(parameters={"x": 1})
    scheduler = Scheduler(world.sessions)
    scheduler.run_once(T0)
    before = {r.id for r in world.runs(deployment_id)}
    world.deploy(parameters={"x": 1})  # the same definition again
    assert {r.id for r in world.runs(deployment_id)} == before
    world.update(deployment_id, parameters={"x": 2})
    assert world.runs(deployment_id) == []  # all in the future, none started
    scheduler.run_once(T0)
    runs = world.runs(deployment_id)
    assert len(runs) == 3 and {r.id for r in runs}.isdisjoint(before)
    assert {r.parameters["x"] for r in runs} == {2}


def test_changing_the_schedules_on_redeploy_replaces_the_runs(world: World) -> None:
    deployment_id = world.deploy()
    scheduler = Scheduler(world.sessions)
    scheduler.run_once(T0)
    world.deploy(schedules=[{"interval": 1800, "slug": "hourly"}])  # same slug, new timing
    scheduler.run_once(T0)
    assert times(world.runs(deployment_id)) == ["01 12:00", "01 12:30", "01 13:00"]
    world.deploy(schedules=[])
    assert world.runs(deployment_id) == []


def test_pausing_the_deployment_deletes_future_runs_and_resuming_recreates_them(world: World) -> None:
    deployment_id = world.deploy()
    scheduler = Scheduler(world.sessions)
    scheduler.run_once(T0)
    with world.sessions.begin() as session:
        deployments.update(session, deployment_id, schemas.DeploymentUpdate(paused=True))
    assert world.runs(deployment_id) == []
    assert scheduler.run_once(T0).created == 0
    world.update(deployment_id, paused=False)
    assert scheduler.run_once(T0).created == 3


def test_deleting_a_deployment_takes_its_future_runs(world: World) -> None:
    deployment_id = world.deploy()
    Scheduler(world.sessions).run_once(T0)
    with world.sessions.begin() as session:
        deployments.delete(session, deployment_id)
        assert session.scalar(select(func.count()).select_from(m.DeploymentSchedule)) == 0
    assert world.runs() == []


def test_a_change_racing_a_pass_leaves_no_run_of_the_old_definition(world: World, database_url: str) -> None:
    """The deployment is updated while a pass has read the schedules but not written yet."""
    deployment_id = world.deploy(parameters={"x": "old"})
    other_engine = make_engine(database_url)
    other = make_sessionmaker(other_engine)
    changer: list[threading.Thread] = []

    def change() -> None:
        with other.begin() as session:
            deployments.update(session, deployment_id, schemas.DeploymentUpdate(parameters={"x": "new"}))

    def after_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if changer or "deployments.flow_id" not in statement or "deployment_schedules" not in statement:
            return
        thread = threading.Thread(target=change)
        changer.append(thread)
        thread.start()
        if database_url.startswith("sqlite"):
            thread.join(timeout=30)  # the pass holds no lock yet on SQLite: the change commits first

    engine = world.sessions.kw["bind"]
    event.listen(engine, "after_cursor_execute", after_read)
    try:
        first = Scheduler(world.sessions).run_once(T0)
    finally:
        event.remove(engine, "after_cursor_execute", after_read)
    changer[0].join(timeout=30)  # PostgreSQL: it waited for the pass's row locks
    other_engine.dispose()
    if database_url.startswith("sqlite"):
        assert first.created == 0  # the version it read was stale: it wrote nothing
    Scheduler(world.sessions).run_once(T0)
    runs = world.runs(deployment_id)
    assert len(runs) == 3 and {r.parameters["x"] for r in runs} == {"new"}


def test_a_committed_change_wakes_the_running_scheduler_through_the_hub(world: World) -> None:
    hub = LocalHub()
    stop_announcing = announce_changes(world.sessions, hub)  # as create_app wires it
    scheduler = Scheduler(world.sessions, loop_seconds=300, hub=hub)
    scheduler.start()
    try:
        # Its first pass done, it now sleeps up to 300 s.
        wait_until("the first scheduler pass", lambda: scheduler.passes == 1, 10, 0.02)
        deployment_id = world.deploy(schedules=[{"interval": 3600}])
        # Within 10 s, not 300: woken.
        wait_until("3 runs scheduled", lambda: len(world.runs(deployment_id)) == 3, 10, 0.02)
    finally:
        scheduler.stop()
        stop_announcing()


# --- Late and catch-up -------------------------------------------------------------------------


def test_overdue_runs_are_named_late_after_the_threshold(world: World) -> None:
    deployment_id = world.deploy(schedules=[])
    late = world.manual_run(deployment_id, T0 - dt.timedelta(seconds=16))
    fresh = world.manual_run(deployment_id, T0 - dt.timedelta(seconds=14))
    waiting = world.manual_run(deployment_id, T0 - dt.timedelta(seconds=60))
    with world.sessions.begin() as session:
        transitions.transition(session, waiting, StateType.SCHEDULED, name="AwaitingConcurrencySlot")
    assert Scheduler(world.sessions, late_after=15).run_once(T0).late == 1
    names = {r.id: (r.state_type, r.state_name) for r in world.runs(deployment_id)}
    assert names[late] == ("SCHEDULED", "Late")
    assert names[fresh] == ("SCHEDULED", "Scheduled")
    assert names[waiting] == ("SCHEDULED", "AwaitingConcurrencySlot")
    with world.sessions() as session:
        assert [s.name for s in flow_runs.history(session, late)] == ["Scheduled", "Late"]


@pytest.fixture(params=[False, True], ids=["one-chunk", "many-chunks"])
def chunked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Catch-up in a pass of one chunk, and in a pass of many, which writes every schedule's next
    run first and the rest in a second round (``downtime`` adds a deployment: two chunks of one)."""
    if request.param:
        monkeypatch.setattr(runs_ahead, "SCHEDULES_PER_CHUNK", 1)
    return bool(request.param)


def downtime(world: World, catchup: str, max_late_runs: int | None = None) -> tuple[uuid.UUID, uuid.UUID, Scheduler]:
    """Runs created ahead at T0 (12:00, 13:00, 14:00), then the server is down until 17:30."""
    deployment_id = world.deploy(catchup=catchup, max_late_runs=max_late_runs)
    world.deploy("bystander", [{"interval": 7200, "slug": "two-hourly"}])
    manual = world.manual_run(deployment_id, T0 + dt.timedelta(minutes=30))
    scheduler = Scheduler(world.sessions)
    scheduler.run_once(T0)
    return deployment_id, manual, Scheduler(world.sessions)  # a fresh process after the downtime


def states(world: World, deployment_id: uuid.UUID) -> dict[str, str]:
    return {r.expected_start_time.strftime("%H:%M"): f"{r.state_type}/{r.state_name}"
            for r in world.runs(deployment_id)}


def test_catch_up_all_runs_every_missed_run(world: World, chunked: bool) -> None:
    deployment_id, _, scheduler = downtime(world, "ALL")
    result = scheduler.run_once(T0 + dt.timedelta(hours=5, minutes=30))
    assert result.skipped == 0
    got = states(world, deployment_id)
    for hour in ("12:00", "13:00", "14:00", "12:30"):
        assert got[hour] == "SCHEDULED/Late"
    for hour in ("15:00", "16:00", "17:00"):  # never created during the downtime: created now
        assert got[hour] == "SCHEDULED/Scheduled"
    assert {"18:00", "19:00", "20:00"} <= set(got)


def test_catch_up_latest_keeps_only_the_newest_missed_run(world: World, chunked: bool) -> None:
    deployment_id, manual, scheduler = downtime(world, "LATEST")
    now = T0 + dt.timedelta(hours=5, minutes=30)
    scheduler.run_once(now)
    scheduler.run_once(now + dt.timedelta(seconds=16))  # 17:00 turns Late: the policy keeps it alone
    got = states(world, deployment_id)
    assert got["17:00"] == "SCHEDULED/Late"
    for hour in ("12:00", "13:00", "14:00"):
        assert got[hour] == "CANCELLED/Cancelled"
    assert "15:00" not in got and "16:00" not in got  # missed while down: not created
    assert got["12:30"] == "SCHEDULED/Late"  # the manual run is not the policy's business
    with world.sessions() as session:
        message = session.scalar(select(m.FlowRun.state_message).where(
            m.FlowRun.idempotency_key == "scheduled:hourly:2030-01-01T12:00:00Z"))
    assert message is not None and "catch-up policy LATEST" in message
    assert manual in {r.id for r in world.runs(deployment_id)}


def test_catch_up_none_runs_no_missed_run(world: World, chunked: bool) -> None:
    deployment_id, _, scheduler = downtime(world, "NONE")
    result = scheduler.run_once(T0 + dt.timedelta(hours=5, minutes=30))
    got = states(world, deployment_id)
    assert result.skipped == 3
    assert [got[h] for h in ("12:00", "13:00", "14:00")] == ["CANCELLED/Cancelled"] * 3
    assert "15:00" not in got and "17:00" not in got
    assert got["18:00"] == "SCHEDULED/Scheduled"
    assert got["12:30"] == "SCHEDULED/Late"


def test_max_late_runs_caps_the_pile(world: World, chunked: bool) -> None:
    deployment_id, _, scheduler = downtime(world, "ALL", max_late_runs=2)
    now = T0 + dt.timedelta(hours=5, minutes=30)
    scheduler.run_once(now)
    scheduler.run_once(now + dt.timedelta(seconds=16))
    got = states(world, deployment_id)
    late = sorted(h for h, s in got.items() if s == "SCHEDULED/Late" and h != "12:30")
    assert late == ["16:00", "17:00"]  # the newest two of 12:00..17:00
    assert got["12:00"] == "CANCELLED/Cancelled"


def test_catch_up_policies_are_refused_when_unknown(world: World) -> None:
    with pytest.raises(ValueError, match="catchup"):
        world.deploy(catchup="SOME")


# --- backfill ----------------------------------------------------------------------------------


def backfill(world: World, deployment_id: uuid.UUID, start: dt.datetime, end: dt.datetime,
             **fields: Any) -> schemas.BackfillResult:
    with world.sessions.begin() as session:
        return svc.backfill(session, session.get(m.Deployment, deployment_id),
                            schemas.BackfillRequest(start=start, end=end, **fields), max_runs=50)


def test_backfill_creates_the_missing_runs_once(world: World) -> None:
    deployment_id = world.deploy(schedules=[{"cron": "0 9 * * *", "timezone": "Europe/Berlin", "slug": "nine"},
                                            {"interval": 86400 * 7, "slug": "weekly", "active": False}])
    start, end = dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 5, 8, tzinfo=dt.UTC)
    assert backfill(world, deployment_id, start, end) == schemas.BackfillResult(created=5, existing=0)
    assert backfill(world, deployment_id, start - dt.timedelta(days=1), end) == schemas.BackfillResult(
        created=1, existing=5)
    runs = world.runs(deployment_id)
    assert times(runs)[0] == "31 08:00" and all(r.tags == ["auto-scheduled", "backfill"] for r in runs)
    # Backfilled runs, even future ones, are left alone by resets (like manual runs).
    assert backfill(world, deployment_id, T0, T0 + dt.timedelta(days=1)).created == 1
    world.update(deployment_id, parameters={"changed": True})
    assert len(world.runs(deployment_id)) == 7


def test_backfill_refuses_bad_windows(world: World) -> None:
    deployment_id = world.deploy(schedules=[{"interval": 60, "slug": "m"}])
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(InvalidInput, match="more than 50 runs"):
        backfill(world, deployment_id, start, start + HOUR)
    with pytest.raises(InvalidInput, match="end is before start"):
        backfill(world, deployment_id, start, start - HOUR)
    with pytest.raises(NotFound, match="schedule 'nope'"):
        backfill(world, deployment_id, start, start + HOUR, schedules=["nope"])
    assert world.runs(deployment_id) == []
