"""How soon after a server's exec the work due at its start is done: a run due while the server was
down published by the dispatcher, a schedule's runs created by the scheduler (issue 22: the
services' first passes in a chain must not make due work wait longer).

    python bench/start_due.py TREE[,TREE...] [--rounds 5] [--database orch_bench_start_due] [--redis-db 12]

Per round and tree, alternating: a new PostgreSQL database, a server started to make a pool, a
deployment with an hourly schedule and a run due in 1 s, then stopped before that; the schedule's
runs deleted (its ``scheduled_until`` reset: the scheduler makes them again); once the run is due,
a restart: milliseconds from exec to the first health 200, to the run's ``dispatched_at`` and to
the first re-created scheduled run's ``created`` (both written by the server's own clock).
Medians per tree. Wall times: give the load average beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from compare.ours import precompile
from start_floor import healthy

from tests.harness import free_port, fresh_postgres, wait_until


def server(tree: str, env: dict[str, str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "orchestrator.cli.main", "server", "start", "--port", str(port)]
    return subprocess.Popen(argv, env={**env, "PYTHONPATH": tree}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def prepare(tree: str, env: dict[str, str], cwd: Path) -> str:
    """A pool, a scheduled deployment and a run due in 1 s, on a server stopped before it is due;
    the run's id."""
    from orchestrator import schemas
    from orchestrator.client import Client

    port = free_port()
    proc = server(tree, env, port, cwd)
    try:
        wait_until("health", lambda: healthy(port), 60, 0.02)
        client = Client(f"http://127.0.0.1:{port}/api")
        client.request("POST", "/work_pools", body={"name": "due", "type": "process"})
        deployment = client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="due", name="due", entrypoint="flows.py:due", path=str(cwd), work_pool_name="due",
            schedules=[schemas.ScheduleCreate(interval=3600)]))
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(scheduled_time=due))
        client.close()
    finally:
        stop(proc)
    return str(run.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", help="comma-separated checkouts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", default="orch_bench_start_due")
    parser.add_argument("--redis-db", type=int, default=12)
    args = parser.parse_args()
    import psycopg

    trees = args.trees.split(",")
    for tree in trees:
        precompile(Path(tree))
    cwd = Path(tempfile.mkdtemp(prefix="start-due-"))
    figures: dict[str, dict[str, list[float]]] = {tree: {"health": [], "dispatched": [], "scheduled": []}
                                                  for tree in trees}
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for i in range(args.rounds):
        for tree in trees[i % len(trees):] + trees[:i % len(trees)]:
            database_url, broker_url = fresh_postgres(args.database, args.redis_db)
            env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
            env.update(ORCH_HOME=tempfile.mkdtemp(prefix="start-due-home-"), ORCH_DATABASE_URL=database_url,
                       ORCH_BROKER_URL=broker_url)
            run_id = prepare(tree, env, cwd)
            url = database_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("DELETE FROM flow_runs WHERE id <> %s", (run_id,))
                db.execute("UPDATE deployment_schedules SET scheduled_until = NULL")
                time.sleep(1.2)  # the run is due before the restart
                port = free_port()
                began = dt.datetime.now(dt.UTC)
                clock = time.perf_counter()
                proc = server(tree, env, port, cwd)
                try:
                    wait_until("health", lambda port=port: healthy(port), 60, 0.005)
                    figures[tree]["health"].append((time.perf_counter() - clock) * 1000)

                    def done(run_id: str = run_id) -> tuple[dt.datetime, dt.datetime] | None:
                        published = db.execute("SELECT dispatched_at FROM flow_runs WHERE id = %s", (run_id,)).fetchone()[0]
                        created = db.execute("SELECT min(created) FROM flow_runs WHERE id <> %s", (run_id,)).fetchone()[0]
                        return (published, created) if published and created else None

                    published, created = wait_until("the due work", done, 60, 0.01)
                finally:
                    stop(proc)
            for name, moment in (("dispatched", published), ("scheduled", created)):
                figures[tree][name].append((moment.replace(tzinfo=dt.UTC) - began).total_seconds() * 1000)
        print(f"  round {i + 1}: " + "; ".join(f"{tree}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in f.items())
                                             for tree, f in figures.items()), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}; medians, ms from exec:")
    for tree, f in figures.items():
        print(f"  {tree}: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in f.items()))


if __name__ == "__main__":
    main()
