"""Dispatch at the right time (issue 4), measured as a user would run it (subprocesses, PostgreSQL +
Redis by default):

* scheduled time -> PENDING: runs created for a time 1-2 s ahead; how late after that time a worker
  claims each (server timestamps: the PENDING state's time minus ``expected_start_time``);
* slot freed -> next run PENDING: a deployment with ``concurrency_limit=1`` and two runs; how long
  after the first ends the waiting one is claimed (Prefect users report tens of seconds, #16186).

    python bench/dispatch.py [--runs 20] [--config postgres|embedded]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from skeleton import Stack, parse_ts, pct

from tests.harness import FINAL, wait_until  # skeleton put the repository on the path


def pending_at(stack: Stack, run_id: str) -> dt.datetime:
    states = stack.client.request("GET", f"/flow_runs/{run_id}/states")
    return parse_ts(next(s["timestamp"] for s in states if s["type"] == "PENDING"))


def wait_final(stack: Stack, run_id: str) -> dict[str, object]:
    def final() -> dict[str, object] | None:  # a long-poll: answers at once when the run ends
        run = stack.client.request("GET", f"/flow_runs/{run_id}/wait", params={"timeout": 30})
        return dict(run) if run["state"]["type"] in FINAL else None

    return wait_until(f"run {run_id} to end", final, 60, 0)


def scheduled_to_pending(stack: Stack, deployment_id: str, runs: int) -> list[float]:
    lateness = []
    for i in range(runs):
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1 + (i % 5) * 0.2)
        run = stack.client.request("POST", f"/deployments/{deployment_id}/runs",
                                   body={"scheduled_time": when.isoformat()})
        wait_final(stack, run["id"])
        lateness.append((pending_at(stack, run["id"]) - parse_ts(run["expected_start_time"])).total_seconds())
    return lateness


def slot_freed_to_pending(stack: Stack, runs: int) -> list[float]:
    stack.client.request("PATCH", f"/deployments/{stack.limited_id}", body={"concurrency_limit": 1})
    gaps = []
    for _ in range(runs):
        first = stack.client.request("POST", f"/deployments/{stack.limited_id}/runs", body={})
        second = stack.client.request("POST", f"/deployments/{stack.limited_id}/runs", body={})
        ended = wait_final(stack, first["id"])
        wait_final(stack, second["id"])
        gaps.append((pending_at(stack, second["id"]) - parse_ts(str(ended["end_time"]))).total_seconds())
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--config", choices=["postgres", "embedded"], default="postgres")
    args = parser.parse_args()
    stack = Stack(args.config)
    try:
        stack.setup()
        deployment_id = stack.client.request("GET", "/deployments/name/noop/bench")["id"]
        stack.run([sys.executable, "-c", "from flows import noop; noop.deploy(name='limited', work_pool_name='bench')"])
        stack.limited_id = stack.client.request("GET", "/deployments/name/noop/limited")["id"]  # type: ignore[attr-defined]
        late = scheduled_to_pending(stack, deployment_id, args.runs)
        gaps = slot_freed_to_pending(stack, args.runs)
    finally:
        stack.stop()
    ms = lambda values, q: f"{pct(values, q) * 1000:.0f} ms"
    print(f"| metric ({args.runs} runs, {args.config}) | p50 | p95 | max |")
    print("|---|---|---|---|")
    print(f"| scheduled time → PENDING (target p50 < 500 ms) | {ms(late, .5)} | {ms(late, .95)} | {ms(late, 1)} |")
    print(f"| slot freed → next run PENDING (deployment limit 1, ENQUEUE) | {ms(gaps, .5)} | {ms(gaps, .95)} | "
          f"{ms(gaps, 1)} |")
    print(f"mean lateness {statistics.mean(late) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
