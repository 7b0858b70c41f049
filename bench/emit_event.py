"""What ``emit_event`` costs the caller, and how fast its events reach the API.

Starts ``orch server start`` (embedded defaults, or PostgreSQL database ``hc_bench_emit`` + Redis db
8 with ``--config postgres``), points this process at it (``ORCH_API_URL``) and, ``--events`` times:

1. **caller's cost**: each ``emit_event`` call timed on the calling thread (validation of the event
   with the same ``EventIn`` model the API uses, JSON dump, queueing); the emitter's thread sends
   meanwhile, as it would in a flow. Median, p99 and mean in µs. The first call (which imports
   pydantic and the schemas, and starts the thread) is reported apart.
2. **delivered**: events/s from the first call until ``flush`` returns (every event stored, in
   batches of up to 100).
3. **queue only**: ``EventEmitter.put`` of an already checked event (the part that must never wait).

Usage: python bench/emit_event.py [--events 20000] [--config embedded|postgres]. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import harness  # the one way tests and benchmarks start the system

DATABASE, REDIS_DB = "hc_bench_emit", 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--config", choices=("embedded", "postgres"), default="embedded")
    args = parser.parse_args()
    env = harness.postgres_env(*harness.fresh_postgres(DATABASE, REDIS_DB)) if args.config == "postgres" else {}
    with tempfile.TemporaryDirectory() as root:
        stack = harness.Stack(Path(root), env)
        try:
            stack.start_server()
            os.environ["ORCH_API_URL"] = stack.api_url
            measure(args.events, args.config)
        finally:
            stack.stop()


def measure(count: int, config: str) -> None:
    from orchestrator import emit_event
    from orchestrator.client import Client
    from orchestrator.emitting import EventEmitter, default_emitter

    resource = {"orchestrator.resource.id": "bench.thing"}
    started = time.perf_counter_ns()
    emit_event("bench.first", resource)
    first_us = (time.perf_counter_ns() - started) / 1000
    default_emitter().flush(30)

    costs: list[int] = []
    started = time.perf_counter()
    for index in range(count):
        before = time.perf_counter_ns()
        emit_event("bench.thing.happened", resource, payload={"index": index, "note": "a small payload"})
        costs.append(time.perf_counter_ns() - before)
    emitted = time.perf_counter() - started
    assert default_emitter().flush(120), "not all events were delivered"
    delivered = time.perf_counter() - started
    emitter = default_emitter()

    costs.sort()
    checked = {"id": "00000000-0000-0000-0000-000000000000", "event": "bench.x", "resource": resource,
               "related": [], "payload": {}, "follows": None, "occurred": "2026-01-01T00:00:00+00:00"}
    # Its thread lingers for a batch that never fills: nothing is sent, only the queueing is timed.
    queue_only = EventEmitter(Client, linger_seconds=3600, max_batch=count + 2, max_buffered=count + 2)
    queue_only.put(checked)
    before = time.perf_counter_ns()
    for _ in range(count):
        queue_only.put(checked)
    put_us = (time.perf_counter_ns() - before) / count / 1000

    load = os.getloadavg()[0]
    print(f"\n`python bench/emit_event.py --events {count} --config {config}` — {os.cpu_count()} cores, "
          f"load average {load:.2f}\n")
    print("| metric | value |\n|---|---|")
    print(f"| `emit_event` on the caller's thread, median | {costs[len(costs) // 2] / 1000:.1f} µs |")
    print(f"| … p99 | {costs[int(len(costs) * 0.99)] / 1000:.1f} µs |")
    print(f"| … mean | {statistics.fmean(costs) / 1000:.1f} µs ({count / emitted:,.0f} calls/s) |")
    print(f"| first call (imports pydantic + schemas, starts the thread) | {first_us / 1000:.1f} ms |")
    print(f"| `EventEmitter.put` alone (queueing a checked event) | {put_us:.2f} µs |")
    print(f"| delivered: first call → all {count:,} settled | {delivered:.2f} s = {emitter.sent / delivered:,.0f} "
          f"events/s stored; {emitter.dropped:,} dropped (burst beyond the buffer), {emitter.refused} refused |")


if __name__ == "__main__":
    main()
