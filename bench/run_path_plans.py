"""The PostgreSQL backend's CPU of a run's transitions on one fresh pooled connection (issue 22):
12 runs claimed, RUNNING and COMPLETED one after the other through the services, with a read-only
session between runs (it ends with a rollback, as a GET of the run does in a live server). Shows
how soon a connection's statements stop being planned (``orchestrator/sql.py``).

Usage: PYTHONPATH=<tree> python bench/run_path_plans.py [--url postgresql+psycopg://postgres@127.0.0.1/DB]
(a migrated database: any the benches have used; it adds a pool, a deployment and 12 runs).
"""

from __future__ import annotations

import argparse
import os
import uuid

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import schemas
from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from orchestrator.states import StateType


def backend_cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as f:  # the backend's time on a CPU, ns (same machine)
        return int(f.read().split()[0]) / 1e6


def scheduled_runs(engine: Engine, runs: int) -> tuple[sessionmaker[Session], list[uuid.UUID]]:
    """The database migrated, a new pool and deployment, ``runs`` runs of it SCHEDULED: the
    sessions and the runs' ids (also bench/transition_cpu.py's setup)."""
    migrate(engine)
    sessions = make_sessionmaker(engine)
    tag = uuid.uuid4().hex[:8]
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name=f"p{tag}", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name=f"f{tag}", name="d", entrypoint="f.py:f", work_pool_name=f"p{tag}"))
        ids = [flow_runs.create(session, deployment.id, schemas.FlowRunCreate())[0].id for _ in range(runs)]
    return sessions, ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("ORCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/orch_bench"))
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    engine = make_engine(args.url)
    sessions, ids = scheduled_runs(engine, args.runs)
    engine.dispose()  # a fresh connection from here
    with sessions() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    steps: dict[str, list[float]] = {"claim": [], "RUNNING": [], "COMPLETED": []}
    for run_id in ids:
        for step, spent in steps.items():
            before = backend_cpu_ms(pid)
            with sessions.begin() as session:
                if step == "claim":
                    claims.claim(session, run_id, "w")
                else:
                    flow_runs.set_state(session, run_id, schemas.StateCreate(type=StateType[step]))
            spent.append(backend_cpu_ms(pid) - before)
        with sessions() as session:
            flow_runs.get(session, run_id)
    for step, spent in steps.items():
        print(f"{step:9s} backend CPU {sum(spent):5.1f} ms in all; runs 1-{len(spent)}: {[round(x, 2) for x in spent]}")


if __name__ == "__main__":
    main()
