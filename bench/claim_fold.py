"""What folding the claim's read into its guarded ``UPDATE`` would buy (issue 22), in process on
PostgreSQL, claim by claim, the two ways alternating on one connection pool:

- ``today``: ``claims.claim`` as the route calls it and its answer serialized: before branch h1's
  commit 100a84a, BEGIN, the read of the run, its pool, queue and deployment ``FOR SHARE``, the
  transition's ``UPDATE``, its state row, its event, COMMIT; since, the product's own fold
  (``claims._folded``: the read as a locking sub-select in the update's ``FROM``);
- ``folded``: a prototype, not the product: BEGIN, one ``UPDATE ... FROM`` the run's deployment,
  flow and pool whose guard also takes the ``FOR SHARE`` locks and checks the pauses and limits (an
  ``EXISTS`` sub-select: what ``admission`` checks when no limit applies), ``RETURNING`` the run and
  what the answer needs, then the same state row and event (``run_statements.add_state``,
  ``events.record``) and the same answer (``claims._answer``), COMMIT. It needs ``transition()``
  to take extra ``RETURNING`` columns, which it does not: the measure of what that change would buy.

Per claim: the thread's CPU, the wall, the PostgreSQL backend's CPU (``/proc``), and with
``--callgrind`` the instructions of this thread (one way per block).

    PYTHONPATH=<tree> python bench/claim_fold.py [--url URL] [--runs 200] [--callgrind]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from claim_cpu import TOGGLE_C
from run_path_plans import backend_cpu_ms, scheduled_runs
from sqlalchemy import and_, bindparam, exists, select, text, update

from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine
from orchestrator.server.services import claims, deployments, emitted, events, run_statements
from orchestrator.sql import GENERIC, PLAN
from orchestrator.states import StateType


def folded_statement() -> Any:
    runs, pools, queues = run_statements.RUNS, m.WorkPool.__table__, m.WorkQueue.__table__
    deployment, flow = m.Deployment.__table__, m.Flow.__table__
    p2, q2, d2 = pools.alias("lp"), queues.alias("lq"), deployment.alias("ld")
    # The locks and the admission checks, re-checked by PostgreSQL on the rows' newest versions once locked.
    open_unlimited = (select(p2.c.id).select_from(p2)
                      .join(q2, and_(q2.c.pool_id == p2.c.id, q2.c.name == runs.work_queue_name))
                      .join(d2, d2.c.id == runs.deployment_id)
                      .where(p2.c.name == runs.work_pool_name, p2.c.name == bindparam("pool"), ~p2.c.paused,
                             ~q2.c.paused, p2.c.concurrency_limit.is_(None), q2.c.concurrency_limit.is_(None),
                             d2.c.concurrency_limit.is_(None))
                      .with_for_update(read=True, of=[p2, q2, d2]).exists())
    scheduled = exists().where(m.DeploymentSchedule.__table__.c.deployment_id == deployment.c.id)
    now = bindparam("now")
    return (update(m.FlowRun.__table__)
            .where(runs.id == bindparam(run_statements.RUN_ID), runs.state_type == StateType.SCHEDULED,
                   runs.state_name != "AwaitingRetry", runs.expected_start_time <= bindparam("due_by"),
                   pools.c.name == runs.work_pool_name, deployment.c.id == runs.deployment_id,
                   flow.c.id == deployment.c.flow_id, open_unlimited)
            .values(state_type=StateType.PENDING, state_name="Pending", state_message=None, state_timestamp=now,
                    updated=now, worker_name=bindparam("worker"), heartbeat_at=None)
            .returning(*m.FlowRun.__table__.c, pools.c.base_job_template.label("base_job_template"),
                       flow.c.name.label("flow_name"), scheduled.label("has_schedules"),
                       *(deployment.c[name].label(f"deployment__{name}") for name in deployments.COLUMNS))
            .execution_options(**{PLAN: GENERIC}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("ORCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/orch_bench"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--callgrind", action="store_true", help="instructions a claim, each way (valgrind)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind and args.child is None:
        work = Path(tempfile.mkdtemp(prefix="claim-fold-"))
        (work / "toggle.c").write_text(TOGGLE_C.replace("CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS;",
                                                        "CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT;")
                                       .replace("{ CALLGRIND_DUMP_STATS_AT(name); }",
                                                "{ CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }"))
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(work / "toggle.so"), str(work / "toggle.c")], check=True)
        subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no",
                        f"--callgrind-out-file={work}/callgrind.out.%p", os.path.realpath(sys.executable), __file__,
                        "--url", args.url, "--runs", str(args.runs), f"--child={work / 'toggle.so'}"],
                       check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        for dump in sorted(work.glob("callgrind.out.*.*")):
            lines = dump.read_text(errors="replace").splitlines()
            name = next(line.split("Request: ")[-1] for line in lines if line.startswith("desc: Trigger"))
            total = next(int(line.split()[1]) for line in lines if line.startswith("summary:"))
            print(f"{name}: {total / args.runs / 1e3:,.0f}k instructions a claim (this thread)")
        return
    toggle = ctypes.CDLL(args.child) if args.child else None
    engine = make_engine(args.url)
    sessions, ids = scheduled_runs(engine, 2 * args.runs + 40)
    with sessions() as session:
        pool = session.get(m.FlowRun, ids[0]).work_pool_name
    statement = folded_statement()

    def today(run_id: Any) -> None:
        with sessions.begin() as session:
            out = claims.claim(session, run_id, "w", pool=pool)
            events.take_announcement(session)
        assert isinstance(out, claims.Claimed)
        out.answer.model_dump_json()

    def folded(run_id: Any) -> None:
        now = dt.datetime.now(dt.UTC)
        with sessions.begin() as session:
            row = session.execute(statement, {run_statements.RUN_ID: run_id, "pool": pool, "worker": "w", "now": now,
                                              "due_by": now + claims.transitions.CLAIM_EARLY}).one()
            state_id, earlier = run_statements.add_state(session, run_id, StateType.PENDING, "Pending", None, now)
            events.record(session, [emitted.run_state_changed(session, row, state_id, earlier)])
            answer = claims._answer(session, row, row)
            events.take_announcement(session)
        answer.model_dump_json()

    with sessions() as session:
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()  # LIFO pool: the same one after
    ways = {"today": today, "folded": folded}
    spent: dict[str, dict[str, list[float]]] = {w: {"cpu": [], "wall": [], "backend": []} for w in ways}
    queue = iter(ids)
    for _ in range(20):  # warm: statements prepared on the connection, caches filled
        for way in ways.values():
            way(next(queue))
    if toggle is not None:
        for name, way in ways.items():
            toggle.block_start()
            for _ in range(args.runs):
                way(next(queue))
            toggle.block_end(name.encode())
        return
    for _ in range(args.runs):
        for name, way in ways.items():
            b0, c0, w0 = backend_cpu_ms(backend), time.thread_time(), time.perf_counter()
            way(next(queue))
            spent[name]["wall"].append((time.perf_counter() - w0) * 1e3)
            spent[name]["cpu"].append((time.thread_time() - c0) * 1e3)
            spent[name]["backend"].append(backend_cpu_ms(backend) - b0)
    print(f"load {os.getloadavg()[0]:.1f}; ms a claim, p50: " + "; ".join(
        f"{name} wall {statistics.median(v['wall']):.3f}, thread CPU {statistics.median(v['cpu']):.3f}, "
        f"backend CPU {statistics.median(v['backend']):.3f}" for name, v in spent.items()))


if __name__ == "__main__":
    main()
