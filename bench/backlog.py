"""A worker slower than the dispatcher's redispatch period (issue 20: "a new run stayed SCHEDULED
(Late) for 60 s with a worker online, right after the history was written").

On PostgreSQL + Redis (database ``orch_backlog`` recreated, Redis db ``--redis-db``), with
``ORCH_DISPATCHER_REDISPATCH_SECONDS`` short (``--redispatch``, 2 s: the same as 30 s with a
backlog 15 times longer), it creates ``--runs`` runs of a flow that sleeps 0.3 s, starts one worker
with ``--limit 1``, waits until they all completed while sampling the length of the queue's Redis
list, then creates one more run and times it to RUNNING. Before the fix, every redispatch period
added a copy of every waiting run to the queue (30 runs: 434 messages), and the new run waited
behind the stale copies (68 s); after it, the queue never holds more than one message per run.

Usage: python bench/backlog.py [--runs 30] [--redispatch 2] [--redis-db 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from bench.skeleton import Stack
from pools.names import run_queue
from tests import harness

FLOW = "import time\nfrom orchestrator import flow\n\n\n@flow\ndef slow() -> None:\n    time.sleep(0.3)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--redispatch", type=float, default=2.0)
    parser.add_argument("--redis-db", type=int, default=2)
    args = parser.parse_args()
    queue = run_queue("backlog", "default")

    def depth() -> int:
        out = subprocess.run(["redis-cli", "-n", str(args.redis_db), "LLEN", queue], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        return int(out.strip() or 0)

    stack = Stack("postgres")
    stack.env.update(harness.postgres_env(*harness.fresh_postgres("orch_backlog", args.redis_db)))
    stack.env["ORCH_DISPATCHER_REDISPATCH_SECONDS"] = str(args.redispatch)
    try:
        stack.start_server(timeout=120)
        stack.run([harness.ORCH_SCRIPT[0], "work-pool", "create", "backlog", "--type", "process"])
        (stack.project / "flows.py").write_text(FLOW)
        stack.run([sys.executable, "-c", "from flows import slow; slow.deploy(name='b', work_pool_name='backlog')"])
        api = stack.client
        deployment = api.request("GET", "/deployments/name/slow/b")["id"]
        for _ in range(args.runs):
            api.request("POST", f"/deployments/{deployment}/runs", body={})
        stack.start_worker("backlog", "--limit", "1", timeout=120)
        t0, peak = time.monotonic(), 0

        def all_completed() -> bool:
            nonlocal peak
            peak = max(peak, depth())
            runs = api.request("GET", "/flow_runs", params={"limit": 1000, "deployment_id": deployment})["items"]
            return sum(r["state"]["type"] == "COMPLETED" for r in runs) >= args.runs

        harness.wait_until(f"{args.runs} runs COMPLETED", all_completed, timeout=1200, interval=0.5)
        print(f"{args.runs} runs completed in {time.monotonic() - t0:.1f} s; queue length at most {peak}, "
              f"now {depth()}", flush=True)
        t1 = time.monotonic()
        run = api.request("POST", f"/deployments/{deployment}/runs", body={})
        harness.wait_until("the new run RUNNING",
                           lambda: api.request("GET", f"/flow_runs/{run['id']}")["start_time"] is not None,
                           timeout=600, interval=0.1)
        print(f"a new run RUNNING after {time.monotonic() - t1:.1f} s (load average {os.getloadavg()[0]:.1f})")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
