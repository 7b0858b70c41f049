"""The server's CPU per heartbeat (a worker's ``POST /work_pools/{pool}/workers/heartbeat`` and a
flow-run process's ``POST /flow_runs/{id}/heartbeat``), of one or more checkouts' ``orch server
start`` (PostgreSQL + Redis), rounds alternating. Sent one after the other by this process; the
server's process tree's user + system CPU from /proc, per request, median over rounds.

Usage: python bench/heartbeat_cpu.py [--code PATH]... [--rounds 5] [--beats 2000] [--database orch_bench_heartbeats] [--redis-db 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare.common import tree_pids
from compare.ours import FLOWS_PY, OursSide
from worker_path import cpu_seconds


def idle_deployment(side: OursSide) -> str:
    """A fresh database, ``side``'s server started on it, a process pool ``idle`` and a deployment of a
    no-op flow on it (no worker: its runs stay where the caller puts them); the deployment's id."""
    from orchestrator import schemas

    side.fresh_database()
    side.start_server()
    flows = side.tmp / "flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    side.api.request("POST", "/work_pools", body={"name": "idle", "type": "process"})
    return str(side.api.upsert_deployment(schemas.DeploymentCreate(
        flow_name="noop", name="idle", entrypoint="flows.py:noop", path=str(flows), work_pool_name="idle")).id)


def one_round(code: Path, args: argparse.Namespace) -> dict[str, float]:
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    side.env["PYTHONPATH"] = str(code)
    try:
        deployment = idle_deployment(side)
        api = side.api
        run_id = uuid.UUID(api.request("POST", f"/deployments/{deployment}/runs", body={})["id"])
        api.request("POST", f"/flow_runs/{run_id}/claim", body={"worker_name": "w", "pool": "idle"})
        api.request("POST", f"/flow_runs/{run_id}/state", body={"type": "RUNNING", "worker_name": "w"})
        out: dict[str, float] = {}
        assert side.server is not None
        for name, beat in (("worker", lambda: api.request("POST", "/work_pools/idle/workers/heartbeat",
                                                          body={"name": "w"})),
                           ("run", lambda: api.request("POST", f"/flow_runs/{run_id}/heartbeat"))):
            for _ in range(100):  # warm-up
                beat()
            cpu0 = cpu_seconds(tree_pids(side.server.pid))
            for _ in range(args.beats):
                beat()
            out[name] = (cpu_seconds(tree_pids(side.server.pid)) - cpu0) / args.beats * 1e6
        out["load"] = os.getloadavg()[0]
        return out
    finally:
        side.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", type=Path, help="checkout whose server runs (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--beats", type=int, default=2000)
    parser.add_argument("--database", default="orch_bench_heartbeats")
    parser.add_argument("--redis-db", type=int, default=6)
    args = parser.parse_args()
    codes = args.code or [Path(__file__).resolve().parents[1]]
    results: dict[Path, list[dict[str, Any]]] = {code: [] for code in codes}
    for i in range(args.rounds):
        for code in codes if i % 2 == 0 else list(reversed(codes)):
            out = one_round(code, args)
            results[code].append(out)
            print(f"round {i + 1} {code}: server CPU per worker heartbeat {out['worker']:.0f} µs, per run heartbeat "
                  f"{out['run']:.0f} µs; load {out['load']:.1f}", flush=True)
    print("\nmedians over rounds:")
    for code, rounds in results.items():
        print(f"{code}: worker heartbeat {statistics.median(r['worker'] for r in rounds):.0f} µs, "
              f"run heartbeat {statistics.median(r['run'] for r in rounds):.0f} µs server CPU")


if __name__ == "__main__":
    main()
