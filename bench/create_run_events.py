"""Create-run cost with and without the state events (issue 17): in-process, no HTTP.

Sequential ``flow_runs.create`` (one transaction per run, the API route's work without HTTP) and one
bulk ``insert_runs`` of 5,000 runs (a scheduler pass), on SQLite (a file) and PostgreSQL (database
``<prefix>_bench_events``, recreated). Prints runs/s, best of ``--repeat``.

Usage: PYTHONPATH=. python bench/create_run_events.py [--runs 1000] [--bulk 5000] [--repeat 3] [--prefix hb]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from orchestrator import schemas
from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
from orchestrator.server.services import deployments, flow_runs, work_pools
from orchestrator.server.services.new_runs import insert_runs, run_values


def measure(url: str, runs: int, bulk: int, repeat: int) -> dict[str, float]:
    engine = make_engine(url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p", tags=["a", "b"]))
        deployment_id, flow_id = deployment.id, deployment.flow_id
    best_one = best_bulk = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(runs):
            with sessions.begin() as session:
                flow_runs.create(session, deployment_id, schemas.FlowRunCreate(tags=["c"]))
        best_one = max(best_one, runs / (time.perf_counter() - start))
        now = dt.datetime.now(dt.UTC)
        rows = [run_values(flow_id=flow_id, deployment_id=deployment_id, deployment_version=None,
                           work_pool_name="p", work_queue_name="default", parameters={}, job_variables={},
                           tags=["a"], idempotency_key=None, expected_start_time=now + dt.timedelta(minutes=i),
                           now=now) for i in range(bulk)]
        start = time.perf_counter()
        with sessions.begin() as session:
            insert_runs(session, rows)
        best_bulk = max(best_bulk, bulk / (time.perf_counter() - start))
    engine.dispose()
    return {"create one by one (runs/s)": best_one, "insert_runs bulk (runs/s)": best_bulk}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--bulk", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prefix", default="hb")
    args = parser.parse_args()
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    database = f"{args.prefix}_bench_events"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {database}"))
        connection.execute(text(f"CREATE DATABASE {database}"))
    with tempfile.TemporaryDirectory() as folder:
        for label, url in (("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}"),
                           ("postgresql", f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")):
            for what, figure in measure(url, args.runs, args.bulk, args.repeat).items():
                print(f"{label:10} {what:28} {figure:8.0f}")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {database}"))
    admin.dispose()


if __name__ == "__main__":
    main()
