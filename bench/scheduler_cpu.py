"""What a scheduler pass costs in CPU, and what PostgreSQL alone needs per run (issue 20, point 6).

1. ``pass``: N deployments cloned into a fresh PostgreSQL database (as ``bench/scheduler.py --start``
   makes them), then one ``Scheduler.fill`` in this process; prints the CPU of this process and of
   the scheduler's PostgreSQL backends (``/proc``). On a machine shared with other work CPU time
   moves far less than the wall clock; compare trees by alternating them (``--trees``: each runs
   its own code and its own ``bench/scheduler.py`` to clone the deployments).
2. ``floor``: the rows a pass writes for one run -- the run, its first state, its
   ``orchestrator.flow-run.Scheduled`` event and the event's five related-resource rows -- made by
   one ``INSERT ... SELECT generate_series`` statement from a run and an event the pass stored (no
   client, no JSON), with the schema's indexes and keys: the backend's CPU per run, with and
   without the event, is what PostgreSQL needs whatever the scheduler does.

Usage: python bench/scheduler_cpu.py pass [--deployments 10000] [--rounds 3] [--trees DIR ...]
       python bench/scheduler_cpu.py floor [--runs 30000] [--rounds 3] [--trees DIR ...]
The database is ``orch_bench_sched_cpu`` (``--database`` to change it); nothing else is touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ADMIN = os.environ.get("ORCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
HERE = Path(__file__).resolve()


def url_of(database: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + f"/{database}"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_pass(count: int, database: str, tree: Path, keep: bool = False) -> None:
    """Runs in a subprocess of ``passes`` (and ``floor``) on ``tree``'s code: prints one line of
    figures. ``keep``: leave the database there (``floor`` copies a run and an event from it)."""
    sys.path.insert(0, str(tree / "bench"))
    from scheduler import clone_deployments  # that tree's bench/scheduler.py, which puts the tree first
    from sqlalchemy import create_engine, text

    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from orchestrator.server.scheduler import Scheduler

    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    clone_deployments(url_of(database), count, {"interval": 3600})
    engine = make_engine(url_of(database))
    scheduler = Scheduler(make_sessionmaker(engine))
    before = resource.getrusage(resource.RUSAGE_SELF)
    created = scheduler.fill(dt.datetime.now(dt.UTC))
    after = resource.getrusage(resource.RUSAGE_SELF)
    with admin.connect() as connection:  # the scheduler's connections, still in its pool
        pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                                  {"d": database}).scalars().all()
    backends = sum(cpu_seconds(pid) for pid in pids)
    own = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"{created} {own:.3f} {backends:.3f}")
    engine.dispose()
    if not keep:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def calibration() -> float:
    """CPU of a fixed Python loop (~0.055 s on this machine when it is quiet)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    total = 0
    for i in range(2_000_000):
        total += i
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime - before


def passes(count: int, rounds: int, trees: list[Path], database: str) -> None:
    print(f"- {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}: one fill pass over {count:,} hourly "
          f"deployments, {rounds} rounds, trees alternating; load average {os.getloadavg()[0]:.1f} at the start")
    print("| tree | round | runs | scheduler process CPU | PostgreSQL backends CPU | both | loop calibration | load |")
    print("|---|---|---|---|---|---|---|---|")
    figures: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
    for round_ in range(1, rounds + 1):
        for tree in trees:
            loop = calibration()
            done = subprocess.run([sys.executable, str(HERE), "_pass", str(count), database, str(tree)],
                                  env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                                  check=True, timeout=1800)
            created, own, backends = done.stdout.split()[-3:]
            figures[tree].append((float(own), float(backends)))
            print(f"| {tree} | {round_} | {int(created):,} | {float(own):.2f} s | {float(backends):.2f} s |"
                  f" {float(own) + float(backends):.2f} s | {loop:.3f} s | {os.getloadavg()[0]:.1f} |", flush=True)
    for tree, values in figures.items():
        own = statistics.median(v[0] for v in values)
        backends = statistics.median(v[1] for v in values)
        print(f"| {tree} | median | | {own:.2f} s | {backends:.2f} s | {own + backends:.2f} s | | |")


def floor(runs: int, rounds: int, database: str, tree: Path) -> None:
    """The rows of ``runs`` scheduled runs written by the database alone, on ``tree``'s schema (a
    pass of 100 deployments on its code first stores a run and an event to copy)."""
    import psycopg

    subprocess.run([sys.executable, str(HERE), "_pass", "100", database, str(tree), "--keep"], check=True,
                   capture_output=True, timeout=600, env={**os.environ, "PYTHONPATH": str(tree)})
    connection = psycopg.connect(url_of(database).replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    run = connection.execute
    columns = [r[0] for r in run("SELECT column_name FROM information_schema.columns WHERE table_name = 'flow_runs' "
                                 "ORDER BY ordinal_position")]
    varied = {"id": "gen_random_uuid()", "name": "'floor-' || i", "idempotency_key": "'floor:' || i",
              "expected_start_time": "t.expected_start_time + i * interval '1 second'"}
    runs_sql = (f"INSERT INTO flow_runs ({', '.join(columns)}) SELECT {', '.join(varied.get(c, 't.' + c) for c in columns)} "
                f"FROM (SELECT * FROM flow_runs LIMIT 1) AS t, generate_series(1, {runs}) AS i "
                "ON CONFLICT (deployment_id, idempotency_key) DO NOTHING "
                "RETURNING id, name, state_type, state_name, state_message, state_timestamp")
    states = ("INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) "
              "SELECT id, state_type, state_name, state_message, state_timestamp FROM r")
    event_columns = "id, occurred, received, event, resource_id, resource, related, payload, follows"
    events = (f"INSERT INTO events ({event_columns}) SELECT gen_random_uuid(), e.occurred, e.received, e.event, "
              "'orchestrator.flow-run.' || r.id, e.resource || jsonb_build_object('orchestrator.resource.id', "
              "'orchestrator.flow-run.' || r.id, 'orchestrator.resource.name', r.name), e.related, e.payload, e.follows "
              "FROM r, (SELECT * FROM events WHERE event = 'orchestrator.flow-run.Scheduled' LIMIT 1) AS e "
              "RETURNING seq, related, occurred")
    links = ("INSERT INTO event_resources (event_seq, resource_id, role, occurred) SELECT ev.seq, "
             "x ->> 'orchestrator.resource.id', x ->> 'orchestrator.resource.role', ev.occurred "
             "FROM ev, jsonb_array_elements(ev.related) AS x")
    variants = {"run, first state, event, 5 related rows": f"WITH r AS ({runs_sql}), s AS ({states}), ev AS ({events}) {links}",
                "run and first state (no event)": f"WITH r AS ({runs_sql}) {states}",
                "run alone": runs_sql}
    pid = connection.info.backend_pid
    print(f"- {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}: {tree}'s schema, {runs:,} runs per statement, "
          f"{rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}, loop calibration {calibration():.3f} s")
    print("| rows written per run | CPU per run, each round | median |")
    print("|---|---|---|")
    for label, sql in variants.items():
        used = []
        for _ in range(rounds):
            before = cpu_seconds(pid)
            with connection.transaction():
                run("SET LOCAL synchronous_commit TO OFF")  # as the scheduler's transactions
                run(sql)
            used.append((cpu_seconds(pid) - before) / runs * 1e6)
            run("DELETE FROM event_resources WHERE event_seq IN (SELECT seq FROM events WHERE resource ->> "
                "'orchestrator.resource.name' LIKE 'floor-%')")
            run("DELETE FROM events WHERE resource ->> 'orchestrator.resource.name' LIKE 'floor-%'")
            run("DELETE FROM flow_runs WHERE name LIKE 'floor-%'")
            run("VACUUM flow_runs, flow_run_states, events, event_resources")
        print(f"| {label} | {' / '.join(f'{u:.0f} µs' for u in used)} | {statistics.median(used):.0f} µs |", flush=True)
    connection.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_pass":  # the subprocess of ``passes`` and ``floor``
        one_pass(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), keep="--keep" in sys.argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["pass", "floor"])
    parser.add_argument("--deployments", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trees", type=Path, nargs="+", default=[HERE.parent.parent])
    parser.add_argument("--database", default="orch_bench_sched_cpu")
    args = parser.parse_args()
    if args.what == "pass":
        passes(args.deployments, args.rounds, [tree.resolve() for tree in args.trees], args.database)
    else:
        for tree in args.trees:
            floor(args.runs, args.rounds, args.database, tree.resolve())


if __name__ == "__main__":
    main()
