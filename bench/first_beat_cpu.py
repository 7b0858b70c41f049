"""The server's CPU for a flow-run process's first held heartbeat, the one it sends as it starts
while its run is PENDING, as each SDK sends it (issue 22, bench/RESULTS.md, "create → RUNNING,
round 4"): ``old`` with the process worker's ``infrastructure_id`` (one ``UPDATE ... RETURNING``
before the hold), ``plain`` without it (a ``SELECT``: any other worker's process), ``opening``
(nothing before the hold; the RUNNING report says where the process runs). One ``orch server
start`` of this checkout (PostgreSQL + Redis); each beat held 1 ms, then read and answered, as all
are. Runs are created and claimed before each measured batch, one fresh PENDING run per beat;
the server's process tree's user + system CPU from /proc per beat and the PostgreSQL backends'
(of its database), median over rounds, kinds alternating.

Usage: python bench/first_beat_cpu.py [--rounds 5] [--beats 300] [--database orch_bench_first_beat] [--redis-db 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare.common import tree_pids
from compare.ours import OursSide
from heartbeat_cpu import idle_deployment
from worker_path import backend_pids, cpu_seconds

SETTLE_SECONDS = 3.0
KINDS: dict[str, dict[str, Any]] = {
    "old": {"hold": 0.001, "infrastructure_id": "process:bench:1"},
    "plain": {"hold": 0.001},
    "opening": {"hold": 0.001, "opening": "true"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--beats", type=int, default=300)
    parser.add_argument("--database", default="orch_bench_first_beat")
    parser.add_argument("--redis-db", type=int, default=6)
    args = parser.parse_args()
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    results: dict[str, dict[str, list[float]]] = {kind: {"server": [], "postgres": []} for kind in KINDS}
    try:
        deployment = idle_deployment(side)
        api = side.api
        assert side.server is not None

        def pending_runs(count: int) -> list[uuid.UUID]:
            runs = [
                uuid.UUID(api.request("POST", f"/deployments/{deployment}/runs", body={})["id"])
                for _ in range(count)
            ]
            for run_id in runs:
                api.request("POST", f"/flow_runs/{run_id}/claim", body={"worker_name": "w", "pool": "idle"})
            return runs

        for run_id in pending_runs(50):  # warm-up
            for params in KINDS.values():
                api.request("POST", f"/flow_runs/{run_id}/heartbeat", params=params)
        for _ in range(args.rounds):
            for kind, params in KINDS.items():
                runs = pending_runs(args.beats)
                time.sleep(SETTLE_SECONDS)  # the creates' and claims' own after-work (events, triggers) done
                server0, pg0 = (
                    cpu_seconds(tree_pids(side.server.pid)),
                    cpu_seconds(backend_pids(side)),
                )
                for run_id in runs:
                    api.request("POST", f"/flow_runs/{run_id}/heartbeat", params=params)
                server1, pg1 = (
                    cpu_seconds(tree_pids(side.server.pid)),
                    cpu_seconds(backend_pids(side)),
                )
                results[kind]["server"].append((server1 - server0) / args.beats * 1e6)
                results[kind]["postgres"].append((pg1 - pg0) / args.beats * 1e6)
    finally:
        side.stop()
    print(
        f"first held beat of a PENDING run, {args.rounds} rounds x {args.beats} beats, median (min-max) µs a beat "
        f"(load {os.getloadavg()[0]:.1f}):"
    )
    for kind, cpu in results.items():
        server, postgres = cpu["server"], cpu["postgres"]
        print(
            f"  {kind:8} server {statistics.median(server):6.0f} ({min(server):.0f}-{max(server):.0f})   "
            f"PostgreSQL {statistics.median(postgres):5.0f} ({min(postgres):.0f}-{max(postgres):.0f})"
        )


if __name__ == "__main__":
    main()
