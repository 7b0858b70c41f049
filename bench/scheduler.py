"""Scheduler benchmark: how long one pass takes to fill N deployments' schedules.

For each N it recreates a database (PostgreSQL ``orch_bench_sched``, or a SQLite file), creates a
process pool and N deployments with one schedule each (``upsert`` in batches, as the API would;
not timed), then times, with the default horizon (at least 3 runs and 1 hour ahead):

1. the first pass (every schedule gets its runs ahead: N x 3 runs for an hourly interval),
2. an idle pass right after (nothing to do: what every periodic pass costs in steady state),
3. a pass one interval later in a fresh process (every schedule is re-planned, each adds a run;
   the first runs are overdue by then, and that pass also names up to 500 of them Late).

With ``--start`` it measures what issue 20 asks instead: N deployments written straight into a
fresh PostgreSQL database (one made through the services, the rest cloned from it with one
``INSERT ... SELECT`` each: 100,000 in seconds), then ``orch server start`` (bench/compare's
``OursSide``, default settings) and the database read every 0.25 s until each deployment has its
3 SCHEDULED runs; the figure is process start -> done, with the CPU the server's process tree and
its PostgreSQL backends spent by health OK and by the end (on a machine shared with other work the
wall clock says little; CPU far less affected). ``--database-name`` / ``--redis-db`` choose what is
recreated and flushed (default: bench/compare's).

Usage: python bench/scheduler.py [--deployments 200 10000] [--kind interval|cron] [--every 3600]
       [--database postgres|sqlite] [--api] [--start [--bound S] [--database-name D] [--redis-db N]]
Prints a Markdown table (the figures go into bench/RESULTS.md by hand; nothing is written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # compare/ (the --start mode)

PG_ADMIN = os.environ.get("ORCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "orch_bench_sched"
COUNTER = "bench-scheduler-counter"  # the polling connection's name: its CPU is not the server's


def fresh_database(kind: str) -> str:
    from sqlalchemy import create_engine, text

    if kind == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='orch-bench-')}/orchestrator.db"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def populate(sessions: Any, count: int, schedule: dict[str, Any]) -> float:
    from compare.ours import write_scheduled_deployments

    began = time.perf_counter()
    write_scheduled_deployments(sessions, count, schedule, parameters=lambda i: {"i": i})
    return time.perf_counter() - began


def measure(database: str, count: int, schedule: dict[str, Any], every: float) -> dict[str, Any]:
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
    from orchestrator.server.scheduler import Scheduler

    engine = make_engine(fresh_database(database))
    migrate(engine)
    sessions = make_sessionmaker(engine)
    setup = populate(sessions, count, schedule)
    now = dt.datetime.now(dt.UTC)
    scheduler = Scheduler(sessions)
    first = scheduler.run_once(now)
    idle = scheduler.run_once(now + dt.timedelta(seconds=1))
    later = Scheduler(sessions).run_once(now + dt.timedelta(seconds=every))  # a fresh process
    result = {"deployments": count, "setup_s": setup, "first_s": first.seconds, "first_runs": first.created,
              "idle_s": idle.seconds, "later_s": later.fill_seconds, "later_runs": later.created,
              "later_late": later.late, "later_late_s": later.seconds - later.fill_seconds}
    engine.dispose()
    return result


def through_api(count: int, schedule: dict[str, Any]) -> None:
    """A live server (scheduler running) on a fresh PostgreSQL database: create ``count``
    deployments through the API from 8 threads, then wait until every one has its runs ahead."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator import schemas
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=Path(tempfile.mkdtemp(prefix="orch-bench-")), database_url=fresh_database("postgres"),
                        api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker()) as server:
        client = server.client()
        client.create_work_pool(schemas.WorkPoolCreate(name="bench", type="process"))

        def create(i: int) -> None:
            client.upsert_deployment(schemas.DeploymentCreate(
                flow_name="bench", name=f"d{i:05d}", entrypoint="flows.py:bench", work_pool_name="bench",
                schedules=[schedule]))

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, range(count)))
        created = time.perf_counter()
        expected = count * 3
        while client.list_flow_runs(limit=1).total < expected:
            if time.perf_counter() - created > 120:
                raise SystemExit("runs ahead not all created within 120 s")
            time.sleep(0.05)
        done = time.perf_counter()
    print(f"| {count:,} through the API | {count / (created - began):.0f} deployments/s | all {expected:,} runs "
          f"ahead {done - created:.2f} s after the last deployment |")


def clone_deployments(url: str, count: int, schedule: dict[str, Any]) -> float:
    """``count`` deployments with ``schedule`` in the (migrated, empty) PostgreSQL database at ``url``:
    a pool and one deployment through the services, then ``count - 1`` copies of its row and its
    schedule's row made by the database itself (every column copied but the id and the name). No
    events and no version history for the copies: nothing the scheduler reads."""
    from sqlalchemy import text

    from orchestrator import schemas
    from orchestrator.server.db import models as m
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
    from orchestrator.server.services import deployments, work_pools

    began = time.perf_counter()
    engine = make_engine(url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="bench", type="process"))
        template = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="bench", name="d000000", entrypoint="flows.py:noop", work_pool_name="bench",
            schedules=[schedule]))[0].id

    def copied(table: Any, replaced: dict[str, str]) -> tuple[str, str]:
        names = [c.name for c in table.columns]
        return ", ".join(names), ", ".join(replaced.get(n, f"t.{n}") for n in names)

    columns, values = copied(m.Deployment.__table__, {"id": "gen_random_uuid()",
                                                      "name": "'d' || lpad(i::text, 6, '0')"})
    s_columns, s_values = copied(m.DeploymentSchedule.__table__, {"id": "gen_random_uuid()", "deployment_id": "d.id"})
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO deployments ({columns}) SELECT {values} FROM deployments AS t, "
                                "generate_series(1, :n) AS i WHERE t.id = :template"),
                           {"n": count - 1, "template": template})
        connection.execute(text(f"INSERT INTO deployment_schedules ({s_columns}) SELECT {s_values} "
                                "FROM deployment_schedules AS t JOIN deployments AS d ON d.id <> t.deployment_id "
                                "WHERE t.deployment_id = :template"), {"template": template})
        connection.execute(text("ANALYZE deployments; ANALYZE deployment_schedules"))
    engine.dispose()
    return time.perf_counter() - began


def runs_counter(url: str) -> tuple[Any, Any]:
    """Deployments with their runs ahead, as ``compare.sched.postgres_counter`` counts them but
    cheaper to ask 4 times a second at 100,000 (an index-only count, no GROUP BY over 300,000
    rows): a first pass gives each deployment exactly 3 runs (hourly, at least 3 and 1 hour
    ahead), so the SCHEDULED runs / 3 is the number done."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"application_name": COUNTER})

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text(
                "SELECT count(*) FROM flow_runs WHERE state_type = 'SCHEDULED'")).scalar_one()) // 3

    return count, engine.dispose


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (``/proc``), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc``'s parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo += parents.get(current, [])
    return tree


def backends_cpu(url: str) -> float:
    """CPU of the PostgreSQL backends connected to the database at ``url`` (this one's excluded):
    a machine shared with other work makes wall-clock figures meaningless, CPU far less so."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid() AND application_name <> :counter"), {"counter": COUNTER}).scalars().all()
    finally:
        engine.dispose()
    return sum(cpu_seconds(pid) for pid in pids)


def server_start(count: int, schedule: dict[str, Any], bound: float, database: str, redis_db: int) -> dict[str, Any]:
    """``orch server start`` on ``count`` cloned deployments -> each has its 3 runs ahead; with the
    CPU the server (its process tree) and its PostgreSQL backends spent by health OK and by then."""
    from compare.ours import OursSide

    side = OursSide("postgres", database=database, redis_db=redis_db)
    dispose = lambda: None
    try:
        side.fresh_database()
        setup = clone_deployments(side.database_url, count, schedule)
        counter, dispose = runs_counter(side.database_url)
        load = os.getloadavg()[0]
        began = time.perf_counter()
        health = side.start_server()

        def cpu() -> tuple[float, float]:
            return (sum(cpu_seconds(pid) for pid in process_tree(side.server.pid)), backends_cpu(side.database_url))

        at_health = cpu()
        done = 0
        while (done := counter()) < count and time.perf_counter() - began < bound:
            side.check_alive()
            time.sleep(0.05 if count <= 1000 else 0.25)
        seconds = time.perf_counter() - began
        at_end = cpu()
        return {"seconds": seconds if done >= count else float("inf"), "health": health, "done": done,
                "setup": setup, "load": load, "load_end": os.getloadavg()[0], "cpu_health": at_health,
                "cpu_end": at_end}
    finally:
        dispose()
        side.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, nargs="+", default=[200, 10000])
    parser.add_argument("--kind", choices=["interval", "cron"], default="interval")
    parser.add_argument("--every", type=float, default=3600.0, help="Interval seconds (cron: hourly at :00).")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--api", action="store_true", help="Create the deployments through a live server.")
    parser.add_argument("--start", action="store_true",
                        help="Time `orch server start` -> every deployment has its runs ahead (PostgreSQL).")
    parser.add_argument("--bound", type=float, default=300.0, help="--start: give up after this many seconds.")
    parser.add_argument("--database-name", default=None,
                        help="--start: the PostgreSQL database to recreate (default: bench/compare's).")
    parser.add_argument("--redis-db", type=int, default=None, help="--start: the Redis db to flush and use.")
    args = parser.parse_args()
    schedule = {"interval": args.every} if args.kind == "interval" else {"cron": "0 * * * *"}
    if args.start:
        print(f"- {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, PostgreSQL, schedule {schedule}")
        from compare.ours import SCHED_DB, SCHED_REDIS, precompile

        precompile()  # as an installed package is: no module compiled at the server's start
        database = args.database_name or SCHED_DB
        redis_db = SCHED_REDIS if args.redis_db is None else args.redis_db
        print("| deployments | server start → all runs ahead | health OK | load at start / end |"
              " CPU by health OK: server / PostgreSQL | CPU by the end: server / PostgreSQL | setup (clone) |")
        print("|---|---|---|---|---|---|---|")
        for count in args.deployments:
            r = server_start(count, schedule, args.bound, database, redis_db)
            ahead = f"{r['seconds']:.2f} s" if r["done"] >= count else f"{r['done']:,} done at {args.bound:.0f} s"
            (health_server, health_db), (end_server, end_db) = r["cpu_health"], r["cpu_end"]
            print(f"| {count:,} | {ahead} | {r['health']:.2f} s | {r['load']:.1f} / {r['load_end']:.1f} |"
                  f" {health_server:.1f} s / {health_db:.1f} s | {end_server:.1f} s / {end_db:.1f} s |"
                  f" {r['setup']:.1f} s |", flush=True)
        return
    if args.api:
        for count in args.deployments:
            through_api(count, schedule)
        return
    print(f"- {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.database}, schedule {schedule}; load {os.getloadavg()[0]:.2f}")
    print("| deployments | first pass | runs created | idle pass | one interval later: fill | runs added |"
          " ... and Late marking (one pass) | setup (upserts) |")
    print("|---|---|---|---|---|---|---|---|")
    for count in args.deployments:
        r = measure(args.database, count, schedule, args.every)
        print(f"| {r['deployments']:,} | {r['first_s']:.2f} s | {r['first_runs']:,} | {r['idle_s'] * 1000:.0f} ms |"
              f" {r['later_s']:.2f} s | {r['later_runs']:,} | {r['later_late']:,} runs in {r['later_late_s']:.2f} s |"
              f" {r['setup_s']:.1f} s |",
              flush=True)


if __name__ == "__main__":
    main()
