"""Cross-replica wake latency: a change made through server replica A wakes a waiter on replica B.

Starts two ``orch server start`` processes (replicas A and B) on one PostgreSQL database
(``orch_bench_hub``, recreated) and one Redis (db 11, flushed), with the default settings: the
event hub is PostgreSQL LISTEN/NOTIFY and the re-read that would otherwise find the change is 30 s
away. Then, ``--tries`` times each:

1. **/wait**: a run scheduled for tomorrow is created through A; B is asked
   ``GET /api/flow_runs/{id}/wait``; after ``SETTLE`` (so B's waiter is waiting) the run is
   cancelled through A. Latency: cancel POST sent to A -> B's answer received.
2. **worker channel**: a run is claimed and set RUNNING by a fake worker ``w`` through A; B is asked
   ``GET /api/work_pools/p/workers/w/cancellations``; after ``SETTLE`` the run is cancelled through
   A (it becomes CANCELLING). Latency as above; then ``w`` confirms CANCELLED.

Both latencies include A's handling of the cancel (commit, then NOTIFY) -- an upper bound on the
hub's part. Usage: python bench/hub_wake.py [--tries 50]. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import harness  # the one way tests and benchmarks start the system

DATABASE, REDIS_DB = "orch_bench_hub", 11
SETTLE = 0.1  # after B's long-poll is sent, before the change: B subscribes in well under this


class Api:
    """One keep-alive HTTP connection to one replica (one per thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body)
        self.connection.request(method, "/api" + path, payload, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None


@contextlib.contextmanager
def replica(root: Path, name: str, database_url: str, broker_url: str) -> Iterator[int]:
    """``orch server start`` with its own ORCH_HOME on the shared database and broker; its port."""
    stack = harness.Stack(root / name, harness.postgres_env(database_url, broker_url), orch=harness.ORCH_SCRIPT)
    try:
        stack.start_server(timeout=60)
        yield stack.port
    finally:
        stack.stop(grace=30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def timed_wake(waiter: Api, path: str, changer: Api, change: str) -> float:
    """Send ``path`` to ``waiter`` in a thread, make the change through ``changer``; seconds from
    sending the change to the waiter's answer."""
    answered: list[float] = []
    thread = threading.Thread(target=lambda: (waiter.call("GET", path), answered.append(time.perf_counter())))
    thread.start()
    time.sleep(SETTLE)
    sent = time.perf_counter()
    changer.call("POST", change)
    thread.join(timeout=60)
    if not answered:
        raise RuntimeError(f"no answer to {path}")
    return answered[0] - sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=50)
    args = parser.parse_args()
    urls = harness.fresh_postgres(DATABASE, REDIS_DB)
    with tempfile.TemporaryDirectory() as tmp, replica(Path(tmp), "a", *urls) as port_a, \
            replica(Path(tmp), "b", *urls) as port_b:
        a, b_wait = Api(port_a), Api(port_b)
        a.call("POST", "/work_pools", {"name": "p", "type": "process"})
        deployment = a.call("POST", "/deployments", {"flow_name": "f", "name": "d", "entrypoint": "f.py:f",
                                                     "work_pool_name": "p"})["id"]
        tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        waits, channel = [], []
        for _ in range(args.tries):
            run = a.call("POST", f"/deployments/{deployment}/runs", {"scheduled_time": tomorrow})["id"]
            waits.append(timed_wake(b_wait, f"/flow_runs/{run}/wait?timeout=30", a, f"/flow_runs/{run}/cancel"))
        for _ in range(args.tries):
            a.call("POST", "/work_pools/p/workers/heartbeat", {"name": "w"})
            run = a.call("POST", f"/deployments/{deployment}/runs", {})["id"]
            a.call("POST", f"/flow_runs/{run}/claim", {"worker_name": "w", "pool": "p"})
            a.call("POST", f"/flow_runs/{run}/state", {"type": "RUNNING", "worker_name": "w"})
            channel.append(timed_wake(b_wait, "/work_pools/p/workers/w/cancellations?timeout=30", a,
                                      f"/flow_runs/{run}/cancel"))
            a.call("POST", f"/flow_runs/{run}/state", {"type": "CANCELLED", "worker_name": "w"})
    load = os.getloadavg()[0]
    print(f"| wake latency, change through A -> answer from B ({args.tries} tries, load {load:.1f}) | p50 | p95 |")
    print("|---|---|---|")
    for label, values in (("`GET /flow_runs/{id}/wait` on B, cancel through A", waits),
                          ("worker cancellation channel on B, cancel through A", channel)):
        print(f"| {label} | {pct(values, 0.5) * 1000:.1f} ms | {pct(values, 0.95) * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
