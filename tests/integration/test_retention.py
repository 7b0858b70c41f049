"""Retention of finished runs, task runs outside flows and logs (``server/retention.py``, ``services/retention.py``) and
``orch db prune``: on both databases for what goes and what stays, on PostgreSQL with a large table
for the batches and for the API answering while a prune's transaction is open."""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.retention import Ages, Retention, prune
from orchestrator.server.services.retention import count_older, delete_batch
from tests.conftest import live_server
from tests.harness import wait_until

DAY = dt.timedelta(days=1)


def _run(session: Any, flow_id: uuid.UUID, state: str, *, ended: dt.timedelta | None,
         logs_age: dt.timedelta = 40 * DAY) -> uuid.UUID:
    """A run in ``state`` that ended ``ended`` ago (None: has not ended), with everything that
    hangs on a run: two states, two logs ``logs_age`` old, a task run and its own API key."""
    now, run_id = utcnow(), uuid.uuid4()
    session.execute(insert(m.FlowRun).values(
        id=run_id, name=f"r-{run_id.hex[:8]}", flow_id=flow_id, state_type=state, state_name=state.title(),
        expected_start_time=now - 41 * DAY, start_time=now - 41 * DAY,
        end_time=None if ended is None else now - ended, parameters={}, job_variables={}, tags=[]))
    session.execute(insert(m.FlowRunState), [
        {"flow_run_id": run_id, "type": "PENDING", "name": "Pending", "timestamp": now - 41 * DAY},
        {"flow_run_id": run_id, "type": state, "name": state.title(), "timestamp": now - 41 * DAY}])
    session.execute(insert(m.Log), [
        {"flow_run_id": run_id, "timestamp": now - logs_age, "level": 20, "name": "flow_run", "message": "old"},
        {"flow_run_id": run_id, "timestamp": now, "level": 20, "name": "flow_run", "message": "new"}])
    session.execute(insert(m.TaskRun).values(
        id=uuid.uuid4(), flow_run_id=run_id, name="t-0", task_name="t", state_type="COMPLETED",
        state_name="Completed", created=now - 41 * DAY, tags=[]))
    session.execute(insert(m.ApiKey).values(name=f"run-{run_id}", prefix=run_id.hex[:16], hash="x", scopes=[],
                                            run_id=run_id))
    return run_id


def _count(session: Any, model: Any, column: Any, run_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).select_from(model).where(column == run_id)) or 0


def _belongings(session: Any, run_id: uuid.UUID) -> list[int]:
    return [_count(session, m.FlowRunState, m.FlowRunState.flow_run_id, run_id),
            _count(session, m.Log, m.Log.flow_run_id, run_id),
            _count(session, m.TaskRun, m.TaskRun.flow_run_id, run_id),
            _count(session, m.ApiKey, m.ApiKey.run_id, run_id)]


def test_only_finished_runs_older_than_the_setting_go_with_all_they_own(sessions: Any) -> None:
    with sessions.begin() as session:
        flow_id = session.scalar(insert(m.Flow).values(name="f").returning(m.Flow.id))
        old = [_run(session, flow_id, state, ended=40 * DAY) for state in ("COMPLETED", "FAILED", "CANCELLED",
                                                                             "CRASHED")]
        recent = _run(session, flow_id, "COMPLETED", ended=DAY)
        # Not final: never deleted, however old (a RUNNING run has no end time; the CANCELLING one is
        # given an old end time to prove the state, not the time, protects it).
        unfinished = [_run(session, flow_id, "RUNNING", ended=None), _run(session, flow_id, "SCHEDULED", ended=None),
                      _run(session, flow_id, "CANCELLING", ended=40 * DAY)]
    retention = Retention(sessions, Ages(runs=30 * DAY, logs=None, events=None), batch=3)
    retention.step()
    assert retention.batches == 2 and retention.deleted == {"runs": 4, "task_runs": 0, "logs": 0, "events": 0}
    with sessions() as session:
        left = set(session.scalars(select(m.FlowRun.id)))
        assert left == {recent, *unfinished}
        for run_id in old:  # SQLite enforces no foreign keys here: the explicit deletes must clean up
            assert _belongings(session, run_id) == [0, 0, 0, 0]
        for run_id in left:
            assert _belongings(session, run_id) == [2, 2, 1, 1]


def _task_run(session: Any, state: str, *, created: dt.timedelta, ended: dt.timedelta | None,
              flow_run_id: uuid.UUID | None = None) -> uuid.UUID:
    """A task run (outside any flow unless ``flow_run_id``) created ``created`` ago, in ``state``,
    that ended ``ended`` ago (None: has not ended)."""
    now, task_run_id = utcnow(), uuid.uuid4()
    session.execute(insert(m.TaskRun).values(
        id=task_run_id, flow_run_id=flow_run_id, name=f"t-{task_run_id.hex[:6]}", task_name="t", state_type=state,
        state_name=state.title(), created=now - created, start_time=now - created,
        end_time=None if ended is None else now - ended, tags=[]))
    return task_run_id


def test_task_runs_outside_flows_follow_the_runs_rule(sessions: Any) -> None:
    """A task called outside a flow is a run no flow run takes with it: ORCH_RUNS_RETENTION deletes
    it once it is final and ended longer ago, as a flow run; nothing else touches it."""
    with sessions.begin() as session:
        flow_id = session.scalar(insert(m.Flow).values(name="f").returning(m.Flow.id))
        old = [_task_run(session, state, created=41 * DAY, ended=40 * DAY)
               for state in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")]
        kept = [
            _task_run(session, "COMPLETED", created=2 * DAY, ended=DAY),  # recent
            _task_run(session, "RUNNING", created=41 * DAY, ended=None),  # not final: however old
            _task_run(session, "COMPLETED", created=41 * DAY, ended=DAY),  # ran long: its end decides
            # An old finished task run of a flow run that has not ended: its run decides, not this rule.
            _task_run(session, "COMPLETED", created=41 * DAY, ended=40 * DAY,
                      flow_run_id=_run(session, flow_id, "RUNNING", ended=None)),
        ]
    with sessions() as session:
        assert count_older(session, "task_runs", utcnow() - 30 * DAY) == 4

    Retention(sessions, Ages(runs=None, logs=30 * DAY, events=30 * DAY)).step()  # other kinds: no task run goes
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(m.TaskRun)) == 9

    retention = Retention(sessions, Ages(runs=30 * DAY, logs=None, events=None), batch=3)
    retention.step()
    assert retention.deleted == {"runs": 0, "task_runs": 4, "logs": 0, "events": 0}
    with sessions() as session:
        outside = set(session.scalars(select(m.TaskRun.id).where(m.TaskRun.flow_run_id.is_(None))))
        assert outside == set(kept[:3]) and not outside & set(old)
        assert session.scalar(select(func.count()).select_from(m.TaskRun)) == 5  # + 2 of the RUNNING flow run


def test_logs_retention_keeps_the_runs(sessions: Any) -> None:
    with sessions.begin() as session:
        flow_id = session.scalar(insert(m.Flow).values(name="f").returning(m.Flow.id))
        runs = [_run(session, flow_id, "COMPLETED", ended=40 * DAY), _run(session, flow_id, "RUNNING", ended=None),
                _run(session, flow_id, "COMPLETED", ended=DAY, logs_age=2 * DAY)]
    Retention(sessions, Ages(runs=None, logs=30 * DAY, events=None)).step()
    with sessions() as session:
        assert set(session.scalars(select(m.FlowRun.id))) == set(runs)
        assert session.execute(select(m.Log.flow_run_id, m.Log.message).order_by(m.Log.id)).all() == [
            (runs[0], "new"), (runs[1], "new"), (runs[2], "old"), (runs[2], "new")]


def test_settings_read_short_durations_and_default_to_keeping_runs_and_logs() -> None:
    from orchestrator.settings import Settings

    default = Ages.from_settings(Settings())
    assert (default.runs, default.logs, default.events) == (None, None, 7 * DAY)
    ages = Ages.from_settings(Settings(runs_retention="30d", logs_retention="P14D"))
    assert (ages.runs, ages.logs) == (30 * DAY, 14 * DAY)


# --- a large table on PostgreSQL ------------------------------------------------------------------

OLD_RUNS, RECENT_RUNS, RUNNING_RUNS, LOGS_PER_RUN = 40_000, 5_000, 5_000, 4


def _seed_large(connection: Any, flow_id: uuid.UUID, deployment_id: uuid.UUID) -> None:
    """50,000 runs (40,000 finished 31-72 days ago, 5,000 finished an hour ago, 5,000 RUNNING since
    long ago), each with one state row and four logs (200,000), in bulk SQL: a few seconds."""
    connection.execute(text("""
        INSERT INTO flow_runs (id, name, flow_id, deployment_id, parameters, job_variables, tags, state_type,
                               state_name, state_timestamp, expected_start_time, start_time, end_time, run_count,
                               crash_restarts, created, updated)
        SELECT gen_random_uuid(), 'bulk-' || i, :flow, :deployment, '{}', '{}', '[]',
               CASE WHEN i <= :old + :recent THEN 'COMPLETED' ELSE 'RUNNING' END,
               CASE WHEN i <= :old + :recent THEN 'Completed' ELSE 'Running' END,
               now(), now() - interval '80 days', now() - interval '80 days',
               CASE WHEN i <= :old THEN now() - interval '31 days' - i * interval '1 minute'
                    WHEN i <= :old + :recent THEN now() - interval '1 hour' END,
               1, 0, now(), now()
        FROM generate_series(1, :total) AS i"""),
        {"flow": flow_id, "deployment": deployment_id, "old": OLD_RUNS, "recent": RECENT_RUNS,
         "total": OLD_RUNS + RECENT_RUNS + RUNNING_RUNS})
    connection.execute(text("""
        INSERT INTO flow_run_states (flow_run_id, type, name, timestamp)
        SELECT id, state_type, state_name, now() FROM flow_runs WHERE name LIKE 'bulk-%'"""))
    # Two logs as old as the run's end (or 60 days for a RUNNING run), two from now.
    connection.execute(text("""
        INSERT INTO logs (flow_run_id, timestamp, level, name, message)
        SELECT id, CASE WHEN k <= 2 THEN coalesce(end_time, now() - interval '60 days') ELSE now() END,
               20, 'flow_run', 'line ' || k
        FROM flow_runs, generate_series(1, :n) AS k WHERE name LIKE 'bulk-%'"""), {"n": LOGS_PER_RUN})
    connection.execute(text("ANALYZE flow_runs; ANALYZE logs; ANALYZE flow_run_states"))


@pytest.fixture
def large(postgres_url: str, tmp_path: Path) -> Any:
    """A live API (services off: the test drives retention itself) on a PostgreSQL database with
    the large table, and a second engine that watches from its own connection."""
    from orchestrator import schemas
    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as api:
        client = api.client()
        client.create_work_pool(schemas.WorkPoolCreate(name="local", type="process"))
        deployment = client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="bulk", name="d", entrypoint="flows.py:bulk", work_pool_name="local"))
        engine = make_engine(postgres_url)
        with engine.begin() as connection:
            _seed_large(connection, deployment.flow_id, deployment.id)
        yield api, client, deployment, make_sessionmaker(engine), engine
        engine.dispose()


def _runs(engine: Any) -> int:
    with engine.connect() as connection:  # its own connection: sees committed rows only
        return connection.scalar(text("SELECT count(*) FROM flow_runs")) or 0


# About 15 s on an idle 2-core machine (seeding 300,000 rows, then 40 batches); minutes under load.
@pytest.mark.timeout(300)
def test_large_table_pruned_in_committed_batches_while_the_api_answers(large: Any) -> None:
    from orchestrator import schemas

    api, client, deployment, sessions, engine = large
    total = OLD_RUNS + RECENT_RUNS + RUNNING_RUNS
    assert _runs(engine) == total
    cutoff = utcnow() - 30 * DAY
    running = client.list_flow_runs(state=["RUNNING"], limit=1).items[0]
    with sessions() as session:
        assert count_older(session, "runs", cutoff) == OLD_RUNS

    # One batch by hand, its transaction held open while the API serves reads and writes: a
    # request that waited on the batch's locks would never return (this thread holds them).
    with sessions.begin() as session:
        gone, cursor = delete_batch(session, "runs", cutoff, 1000)
        assert gone == 1000 and cursor is not None
        created = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
        assert client.read_flow_run(created.id).state.type == "SCHEDULED"
        assert len(client.list_flow_runs(limit=5).items) == 5
        status, _ = api.raw("POST", f"/flow_runs/{running.id}/logs",
                            [{"timestamp": utcnow().isoformat(), "message": "written during a prune"}])
        assert status == 201
        assert _runs(engine) == total + 1  # the batch is not visible before its commit
    assert _runs(engine) == total + 1 - 1000

    # The rest: every batch commits on its own, so another connection sees the count fall stepwise.
    seen: list[int] = []
    assert prune(sessions, "runs", cutoff, on_batch=lambda gone: seen.append(_runs(engine))) == OLD_RUNS - 1000
    steps = [before - after for before, after in zip([total + 1 - 1000, *seen], seen, strict=False)]
    assert len(seen) == OLD_RUNS // 1000 - 1 and all(step == 1000 for step in steps), steps

    with engine.connect() as connection:
        states = dict(connection.execute(text("SELECT state_type, count(*) FROM flow_runs GROUP BY 1")).all())
        assert states == {"COMPLETED": RECENT_RUNS, "RUNNING": RUNNING_RUNS, "SCHEDULED": 1}
        orphans = connection.scalar(text("SELECT count(*) FROM logs l WHERE NOT EXISTS "
                                         "(SELECT 1 FROM flow_runs r WHERE r.id = l.flow_run_id)"))
        assert orphans == 0
        logs_before = connection.scalar(text("SELECT count(*) FROM logs"))
        assert logs_before == (RECENT_RUNS + RUNNING_RUNS) * LOGS_PER_RUN + 1

    # Logs alone: the RUNNING runs' 60-day-old lines go, every run stays.
    assert prune(sessions, "logs", cutoff) == RUNNING_RUNS * 2
    assert _runs(engine) == RECENT_RUNS + RUNNING_RUNS + 1
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM logs")) == logs_before - RUNNING_RUNS * 2


def _orch(database_url: str, home: Path, *args: str) -> Any:
    """``orch`` in this process (a subprocess per call costs seconds; the e2e tier does that)."""
    from typer.testing import CliRunner

    from orchestrator.cli.commands import app

    return CliRunner().invoke(app, list(args), env={"ORCH_DATABASE_URL": database_url, "ORCH_HOME": str(home)})


def test_orch_db_prune_dry_run_then_real(sessions: Any, database_url: str, tmp_path: Path) -> None:
    with sessions.begin() as session:
        flow_id = session.scalar(insert(m.Flow).values(name="f").returning(m.Flow.id))
        old = _run(session, flow_id, "COMPLETED", ended=40 * DAY)
        kept = [_run(session, flow_id, "COMPLETED", ended=DAY), _run(session, flow_id, "RUNNING", ended=None)]
        old_task = _task_run(session, "COMPLETED", created=41 * DAY, ended=40 * DAY)  # outside any flow
        kept_task = _task_run(session, "COMPLETED", created=2 * DAY, ended=DAY)

    dry = _orch(database_url, tmp_path, "db", "prune", "--older-than", "30d", "--runs", "--dry-run")
    assert dry.exit_code == 0, dry.output
    # The cutoff as docs/cli.md shows it: ISO 8601 to the second.
    cutoff = r" older than \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n"
    assert re.fullmatch(f"would delete 1 runs{cutoff}would delete 1 task runs{cutoff}", dry.stdout), dry.stdout
    with sessions() as session:
        assert len(session.scalars(select(m.FlowRun.id)).all()) == 3

    real = _orch(database_url, tmp_path, "db", "prune", "--older-than", "30d")
    assert real.exit_code == 0, real.output
    lines = real.stdout.splitlines()
    # Runs first (with their logs); the logs pass then finds the RUNNING and recent runs' old lines.
    assert [line.split(" older than ")[0] for line in lines] == ["deleted 1 runs", "deleted 1 task runs",
                                                                  "deleted 2 logs", "deleted 0 events"]
    with sessions() as session:
        assert set(session.scalars(select(m.FlowRun.id))) == set(kept)
        assert old_task not in set(session.scalars(select(m.TaskRun.id)))
        assert kept_task in set(session.scalars(select(m.TaskRun.id)))
        assert _belongings(session, old) == [0, 0, 0, 0]

    for bad in ("soon", "0", "-5d"):
        refused = _orch(database_url, tmp_path, "db", "prune", "--older-than", bad)
        assert refused.exit_code == 2, refused.output  # the option parser's answer, naming the option
        assert refused.stderr.startswith("Error: Invalid value for '--older-than'"), refused.output


def test_the_servers_retention_follows_its_settings_and_counts_on_metrics(database_url: str, tmp_path: Path) -> None:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api",
                        runs_retention="30d", logs_retention="35d")
    with live_server(settings, broker=MemoryBroker()) as api:
        retention = api.app.state.retention
        # Its first pass runs at start, on nothing: seeding before it ends would let it take some
        # kinds (the logs, after the runs' pass found none) and count them twice over the step below.
        wait_until("the retention's first pass", lambda: retention.passes >= 1, 10, 0.01)
        with retention.sessions.begin() as session:
            flow_id = session.scalar(insert(m.Flow).values(name="f").returning(m.Flow.id))
            _run(session, flow_id, "COMPLETED", ended=40 * DAY)
            kept = _run(session, flow_id, "RUNNING", ended=None)
            _task_run(session, "FAILED", created=41 * DAY, ended=40 * DAY)  # outside any flow
        retention.step()  # the pass its loop makes every 10 minutes
        with retention.sessions() as session:
            assert list(session.scalars(select(m.FlowRun.id))) == [kept]
        status, text_ = api.raw("GET", "/metrics")
        assert status == 200
        assert 'orch_retention_deleted_total{kind="runs"} 1.0' in text_
        assert 'orch_retention_deleted_total{kind="logs"} 1.0' in text_  # the RUNNING run's 40-day-old line
        assert 'orch_retention_deleted_total{kind="task_runs"} 1.0' in text_


def test_orch_db_prune_on_a_database_without_tables_says_so(tmp_path: Path) -> None:
    refused = _orch(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path, "db", "prune", "--older-than", "30d")
    assert refused.exit_code == 1 and "cannot prune the database at sqlite:///" in refused.stderr, refused.output
    assert "orch server migrate" in refused.stderr


def test_logs_for_a_run_pruned_meanwhile_are_not_found_not_a_server_error(postgres_url: str) -> None:
    # A flow-run process may ship a log line just as retention deletes its (old, finished) run: the
    # line's insert waits for the delete's lock, then meets the foreign key. That is "not found".
    from orchestrator import schemas
    from orchestrator.errors import NotFound
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
    from orchestrator.server.services import flow_runs
    from tests.harness import wait_until

    engine = make_engine(postgres_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            flow_id = session.scalar(insert(m.Flow).values(name="f").returning(m.Flow.id))
            run_id = _run(session, flow_id, "COMPLETED", ended=40 * DAY)
        pruning = sessions()
        assert delete_batch(pruning, "runs", utcnow() - 30 * DAY, 10)[0] == 1  # not committed yet
        outcome: list[BaseException | int] = []

        def ship() -> None:
            try:
                with sessions.begin() as session:
                    outcome.append(flow_runs.add_logs(session, run_id, [schemas.LogCreate(
                        timestamp=utcnow(), level=20, name="flow_run", message="late")]))
            except BaseException as error:  # noqa: BLE001 -- the test looks at what it was
                outcome.append(error)

        shipper = threading.Thread(target=ship)
        shipper.start()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:  # a fresh look each time
            wait_until("the log insert waiting for the delete's lock", lambda: watcher.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )).scalar(), 10)
        pruning.commit()
        pruning.close()
        shipper.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], NotFound), outcome
        assert str(run_id) in str(outcome[0])
    finally:
        engine.dispose()
