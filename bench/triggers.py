"""Triggers: how fast an event becomes a running run, and how many events a second one evaluator
gets through against 100 automations. PostgreSQL (database ``ht_bench_triggers``) + Redis db 14.

1. **latency**: ``orch server start`` + ``orch worker start`` (process worker), a deployment of a
   no-op flow, an automation ``expect: bench.go`` -> run-deployment. ``--runs`` times: one event
   POSTed (``occurred`` = the moment it is sent), then the run read until RUNNING. Reports the
   p50/p95 of event -> run created (the trigger's part: store, wake, evaluate, fire, create) and
   event -> RUNNING (``start_time``; adds publish, claim and the flow-run process start).
2. **evaluation rate**: in this process, 100 automations (10 event names x reactive / threshold
   windows / for_each / proactive / compound), ``--events`` events stored first (1 in 5 covered
   by some trigger), then one ``Evaluator`` runs passes until the cursor reaches the last one.

Usage: python bench/triggers.py [--runs 30] [--events 20000] (``--runs 0``: the evaluation rates only). Prints
Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import harness  # noqa: E402 -- the one way tests and benchmarks start the system

DATABASE, REDIS_DB = "ht_bench_triggers", 14
FLOW = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def noop(n: int = 0) -> int:
        return n
''')


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def latency(runs: int) -> tuple[list[float], list[float]]:
    import datetime as dt

    database_url, broker_url = harness.fresh_postgres(DATABASE, REDIS_DB)
    env = harness.postgres_env(database_url, broker_url)
    created_ms: list[float] = []
    running_ms: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        stack = harness.Stack(Path(root), env)
        try:
            stack.start_server()
            stack.orch("work-pool", "create", "bench", "--type", "process")
            (stack.project / "flows.py").write_text(FLOW)
            deployed = stack.python('from flows import noop; print(noop.deploy(name="n", work_pool_name="bench"))')
            deployment_id = deployed.stdout.strip().splitlines()[-1]
            stack.post("/automations", {"name": "go", "trigger": {"expect": ["bench.go"]}, "actions": [
                {"type": "run-deployment", "deployment_id": deployment_id, "parameters": {"n": "{{ event.payload.n }}"}}]})
            stack.start_worker("bench")
            for n in range(runs + 2):
                sent = dt.datetime.now(dt.timezone.utc)
                stack.post("/events", [{"event": "bench.go", "resource": {"orchestrator.resource.id": "bench"},
                                        "payload": {"n": n}, "occurred": sent.isoformat(), "id": str(uuid.uuid4())}])

                def started(n: int = n) -> dict | None:  # type: ignore[type-arg]
                    items = stack.get(f"/flow_runs?deployment_id={deployment_id}&limit=200")["items"]
                    run = next((r for r in items if r["parameters"].get("n") == n), None)
                    return run if run and run["start_time"] else None

                run = harness.wait_until("the triggered run to start", started, 60, 0.01, describe=stack.all_logs)
                harness.wait_until("the run to end", lambda: stack.get(f"/flow_runs/{run['id']}")["state"]["type"]
                                   in harness.FINAL, 60, 0.02)
                if n < 2:
                    continue  # warm-up: imports, connections
                created_ms.append((dt.datetime.fromisoformat(run["created"]) - sent).total_seconds() * 1000)
                running_ms.append((dt.datetime.fromisoformat(run["start_time"]) - sent).total_seconds() * 1000)
        finally:
            stack.stop()
    return created_ms, running_ms


def evaluation_rate(count: int, counting: bool = False) -> tuple[float, int]:
    """``counting``: the every-event triggers count to 1,000 instead (few firings: the common case)."""
    from orchestrator.schemas.automations import AutomationCreate
    from orchestrator.schemas.events import EventIn
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
    from orchestrator.server.services import automations, events
    from orchestrator.server.triggers.evaluator import Evaluator

    database_url, _ = harness.fresh_postgres(DATABASE, REDIS_DB)
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    shapes = [
        (lambda i: {"expect": [f"bench.e{i % 10}"], "threshold": 1000, "within": 60}) if counting else
        (lambda i: {"expect": [f"bench.e{i % 10}"]}),
        lambda i: {"expect": [f"bench.e{i % 10}"], "threshold": 5, "within": 60},
        lambda i: {"expect": [f"bench.e{i % 10}"], "for_each": ["orchestrator.resource.id"], "threshold": 3,
                   "within": 30},
        lambda i: {"expect": [f"bench.e{i % 10}"], "posture": "Proactive", "within": 3600,
                   "for_each": ["orchestrator.resource.id"]},
        lambda i: {"type": "compound", "require": "all", "within": 60,
                   "triggers": [{"expect": [f"bench.e{i % 10}"]}, {"expect": [f"bench.e{(i + 1) % 10}"]}]},
    ]
    with sessions.begin() as session:
        for i in range(100):
            automations.create(session, AutomationCreate.model_validate({
                "name": f"a{i}", "trigger": shapes[i % len(shapes)](i), "actions": [{"type": "do-nothing"}]}))
    evaluator = Evaluator(sessions)
    evaluator.run_pass()  # the cursor starts here
    for start in range(0, count, 1000):
        with sessions.begin() as session:
            events.record(session, [EventIn(
                event=f"bench.e{i % 10}" if i % 5 == 0 else f"bench.other{i % 7}",
                resource={"orchestrator.resource.id": f"bench.thing.{i % 50}"}) for i in range(start, start + 1000)])
    began = time.perf_counter()
    firings = 0
    while True:
        work, _ = evaluator.run_pass()
        firings += work.firings if work else 0
        if work is None or evaluator.last_batch == 0:
            break
    elapsed = time.perf_counter() - began
    engine.dispose()
    return count / elapsed, firings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    rate, firings = evaluation_rate(args.events)
    counting_rate, counting_firings = evaluation_rate(args.events, counting=True)
    created, running = latency(args.runs) if args.runs else ([0.0], [0.0])  # --runs 0: the evaluation only
    print(f"\n`python bench/triggers.py --runs {args.runs} --events {args.events}` — {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, PostgreSQL + Redis\n")
    print("| metric | target | value |\n|---|---|---|")
    print(f"| event POSTed → triggered run created p50 |  | {statistics.median(created):.0f} ms |")
    print(f"| … p95 |  | {_p(created, 0.95):.0f} ms |")
    print(f"| event POSTed → triggered run RUNNING p50 (process worker) | ≤ 150 ms | {statistics.median(running):.0f} ms |")
    print(f"| … p95 |  | {_p(running, 0.95):.0f} ms |")
    print(f"| evaluation, 100 automations, {args.events} events stored | ≥ 2,000 events/s | {rate:,.0f} events/s "
          f"({firings} firings, each recording 2 events) |")
    print(f"| … the same with few firings (window counts instead of every-event triggers) | ≥ 2,000 events/s | "
          f"{counting_rate:,.0f} events/s ({counting_firings} firings) |")


if __name__ == "__main__":
    main()
