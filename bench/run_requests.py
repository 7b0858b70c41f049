"""The server's side of one run's path (issue 22), without the worker and the flow-run process: the
requests they make, sent one after the other by this process to ``orch server start`` of one or
more checkouts (PostgreSQL + Redis), alternating.

Per run: POST create -> the worker's claim (``pool`` given, as a worker sends it) -> its
infrastructure report -> RUNNING (with a flow version, as the flow-run process reports it) ->
COMPLETED. Reported per checkout: the median over rounds of the server's and PostgreSQL's CPU per
run (user + system from /proc: the server's process tree, the bench database's backends), the
statements and commits the server sent per run (counted by SQLAlchemy engine events a
``sitecustomize`` adds, as bench/run_timeline.py marks its steps: the product is not changed;
round trips, which the load of a shared machine does not change), and each request's latency p50
(its client's wall clock; noisy on a loaded machine).

Nothing consumes the runs' broker messages: the pool has no worker, its runs are claimed here.

Usage: python bench/run_requests.py [--code PATH]... [--rounds 5] [--runs 200] [--database h2_requests] [--redis-db 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare.common import tree_pids
from compare.ours import OursSide
from heartbeat_cpu import idle_deployment
from worker_path import backend_pids, cpu_seconds

STEPS = ("create", "claim", "infrastructure", "running", "completed")


SITECUSTOMIZE = r'''
import itertools, os, signal

_OUT = os.environ.get("ORCH_BENCH_STATEMENTS")
if _OUT:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _statements, _commits = itertools.count(), itertools.count()  # next() is atomic under the GIL
    event.listen(Engine, "before_cursor_execute", lambda *a: next(_statements))
    event.listen(Engine, "commit", lambda *a: next(_commits))

    def _dump(*_):
        with open(_OUT, "w") as f:  # itertools.count's repr is its next value
            f.write(f"{repr(_statements)[6:-1]} {repr(_commits)[6:-1]}")

    signal.signal(signal.SIGUSR1, _dump)
'''


def counted(server_pid: int, out: Path) -> tuple[int, int]:
    """Statements and commits the server has sent so far (its ``sitecustomize`` writes them on SIGUSR1)."""
    out.unlink(missing_ok=True)
    os.kill(server_pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not out.exists() or not out.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not write its statement count")
        time.sleep(0.01)
    statements, commits = out.read_text().split()
    return int(statements), int(commits)


BEAT_SECONDS = 2.0  # the bench's worker "w" beats this often: silent, the reaper would take its runs back
_beaten = [0.0]


def one_run(side: OursSide, deployment: str, wall: dict[str, list[float]]) -> None:
    api = side.api
    if time.monotonic() - _beaten[0] > BEAT_SECONDS:
        api.request("POST", "/work_pools/idle/workers/heartbeat", body={"name": "w"})
        _beaten[0] = time.monotonic()

    def timed(step: str, method: str, path: str, body: Any) -> Any:
        t0 = time.perf_counter()
        out = api.request(method, path, body=body)
        wall[step].append(time.perf_counter() - t0)
        return out

    run_id = timed("create", "POST", f"/deployments/{deployment}/runs", {})["id"]
    timed("claim", "POST", f"/flow_runs/{run_id}/claim", {"worker_name": "w", "pool": "idle"})
    timed("infrastructure", "POST", f"/flow_runs/{run_id}/infrastructure", {"infrastructure_id": "process:bench:1"})
    timed("running", "POST", f"/flow_runs/{run_id}/state",
          {"type": "RUNNING", "worker_name": "w", "flow_version": "0123456789ab", "flow_run_name": None})
    timed("completed", "POST", f"/flow_runs/{run_id}/state", {"type": "COMPLETED", "worker_name": "w", "result": None})


def one_round(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    hooks = Path(tempfile.mkdtemp(prefix="orch-requests-"))
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    counts = hooks / "counts.txt"
    side.env["PYTHONPATH"] = f"{hooks}{os.pathsep}{code}"
    side.env["ORCH_BENCH_STATEMENTS"] = str(counts)
    try:
        deployment = idle_deployment(side)
        _beaten[0] = 0.0  # a new server: beat at once
        wall: dict[str, list[float]] = {step: [] for step in STEPS}
        for _ in range(20):  # warm-up: caches, prepared statements, the connection pool
            one_run(side, deployment, wall)
        wall = {step: [] for step in STEPS}
        assert side.server is not None
        load = os.getloadavg()[0]
        calls0 = counted(side.server.pid, counts)
        server0, pg0 = cpu_seconds(tree_pids(side.server.pid)), cpu_seconds(backend_pids(side))
        for _ in range(args.runs):
            one_run(side, deployment, wall)
        time.sleep(0.5)  # the last hub publications and event writes done
        server = (cpu_seconds(tree_pids(side.server.pid)) - server0) / args.runs * 1000
        pg = (cpu_seconds(backend_pids(side)) - pg0) / args.runs * 1000
        calls = [(after - before) / args.runs for after, before in zip(counted(side.server.pid, counts), calls0)]
    finally:
        side.stop()
    return {"server": server, "postgres": pg, "statements": calls[0], "commits": calls[1], "load": (load, os.getloadavg()[0]),
            **{step: statistics.median(values) * 1000 for step, values in wall.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", type=Path, help="checkout whose server runs (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database", default="h2_requests")
    parser.add_argument("--redis-db", type=int, default=5)
    args = parser.parse_args()
    codes = args.code or [Path(__file__).resolve().parents[1]]
    results: dict[Path, list[dict[str, Any]]] = {code: [] for code in codes}
    for i in range(args.rounds):
        for code in codes if i % 2 == 0 else list(reversed(codes)):
            out = one_round(code, args)
            results[code].append(out)
            print(f"round {i + 1} {code}: server {out['server']:.2f} ms, postgres {out['postgres']:.2f} ms CPU per run, "
                  f"{out['statements']:.1f} statements + {out['commits']:.1f} commits; p50 ms " + ", ".join(f"{s} {out[s]:.2f}" for s in STEPS)
                  + f"; load {out['load'][0]:.1f}-{out['load'][1]:.1f}", flush=True)
    print("\nmedians over rounds:")
    for code, rounds in results.items():
        def med(key: str, rounds: list[dict[str, Any]] = rounds) -> float:
            return statistics.median(r[key] for r in rounds)

        print(f"{code}: server {med('server'):.2f} ms + postgres {med('postgres'):.2f} ms CPU per run, "
              f"{med('statements'):.1f} statements + {med('commits'):.1f} commits per run; request p50 ms "
              + ", ".join(f"{s} {med(s):.2f}" for s in STEPS))


if __name__ == "__main__":
    main()
