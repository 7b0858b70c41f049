"""The server's own CPU of a run's transitions, in process (issue 22): per run, the claim, a
heartbeat, RUNNING and COMPLETED done as their routes do them (the service in a transaction, the
answer built and serialized, the hub's events of the run), on PostgreSQL. Thread CPU
(``time.thread_time``), so the load of a shared machine counts less than in wall time; the
database's own time is not in it. Run it with each tree's PYTHONPATH, alternating.

Usage: PYTHONPATH=<tree> python bench/transition_cpu.py [--url postgresql+psycopg://...] [--runs 200] [--setup-only]
(a migrated database, or an empty one: it migrates; it adds a pool, a deployment and the runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

from run_path_plans import scheduled_runs

from orchestrator import schemas
from orchestrator.server.db.session import make_engine
from orchestrator.server.hub import run_events
from orchestrator.server.services import claims, events, flow_runs
from orchestrator.states import StateType


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("ORCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/orch_bench"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--setup-only", action="store_true",
                        help="create the runs and stop: the baseline to subtract from a whole process's "
                             "instruction count (perf stat -e instructions:u, valgrind)")
    args = parser.parse_args()
    engine = make_engine(args.url)
    sessions, ids = scheduled_runs(engine, args.runs)

    if args.setup_only:
        return

    def claim(run_id: uuid.UUID) -> None:
        with sessions.begin() as session:
            out = claims.claim(session, run_id, "w")
            events.take_announcement(session)
        assert isinstance(out, claims.Claimed)
        run_events(out.run)
        out.answer.model_dump_json()

    def beat(run_id: uuid.UUID) -> None:
        with sessions() as session:
            flow_runs.to_schema(flow_runs.heartbeat(session, run_id, infrastructure_id="pid-1"), session).model_dump_json()
            session.commit()

    def report(state: StateType):  # type: ignore[no-untyped-def]
        def step(run_id: uuid.UUID) -> None:
            with sessions.begin() as session:
                run = flow_runs.set_state(session, run_id, schemas.StateCreate(type=state, worker_name="w"))
                flow_runs.left_state(session, run_id)
                out = flow_runs.to_schema(run, session)
                events.take_announcement(session)
            run_events(run)
            out.model_dump_json()
        return step

    steps = {"claim": claim, "beat": beat, "RUNNING": report(StateType.RUNNING), "COMPLETED": report(StateType.COMPLETED)}
    spent: dict[str, list[float]] = {name: [] for name in steps}
    for run_id in ids:
        for name, step in steps.items():
            before = time.thread_time()
            step(run_id)
            spent[name].append((time.thread_time() - before) * 1000)
    skip = min(10, args.runs // 4)  # the first runs compile and cache statements
    total = [sum(spent[name][i] for name in steps) for i in range(skip, args.runs)]
    print(" ".join(f"{name} {statistics.median(v[skip:]):.3f}" for name, v in spent.items()),
          f"| all four p50 {statistics.median(total):.3f} mean {statistics.mean(total):.3f} ms thread CPU a run")


if __name__ == "__main__":
    main()
