"""Triggers: how fast an event becomes a running run, how many events a second one evaluator
gets through against 100 automations, and whether its backlog stays bounded under a sustained
load. PostgreSQL (``--database``, default ``ht_bench_triggers``: dropped and re-created) + Redis
(``--redis-db``, default 14: flushed).

1. **latency**: ``orch server start`` + ``orch worker start`` (process worker), a deployment of a
   no-op flow, an automation ``expect: bench.go`` -> run-deployment. ``--runs`` times: one event
   POSTed (``occurred`` = the moment it is sent), then the run read until RUNNING. Reports the
   p50/p95 from the POST to each stage: event stored, the evaluator's pass begins, run created (the
   trigger's part ends here), run PENDING (published, claimed by the worker), run RUNNING
   (``start_time``: the flow-run process started).
2. **evaluation rate**: in this process, 100 automations (10 event names x reactive / threshold
   windows / for_each / proactive / compound), ``--events`` events stored first (1 in 5 covered
   by some trigger), then one ``Evaluator`` runs passes until the cursor reaches the last one;
   with the CPU seconds of this process and of its PostgreSQL backends (the wall-clock rate means
   little on a shared machine).
3. **sustained load** (``--sustained SECONDS``, instead of 1 and 2): a server with the same 100
   automations, events POSTed at ``--rate`` a second, and every second the evaluation lag (events
   recorded but not evaluated yet, the firings' own included) and the age of the oldest of them.

Usage: python bench/triggers.py [--runs 30] [--events 20000] (``--runs 0``: the evaluation rates only;
``--events 0``: the latency only), or python bench/triggers.py --sustained 60 [--rate 2000]. Prints
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
from compare.common import cpu_seconds

from tests import harness  # the one way tests and benchmarks start the system

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


STAGES = ("stored", "evaluated", "created", "pending", "running")
_STAGE_TIMES = """
SELECT (SELECT received FROM events WHERE id = :event_id),
       (SELECT e.occurred FROM events AS e JOIN event_resources AS r ON r.event_seq = e.seq
         WHERE r.resource_id = 'orchestrator.event.' || :event_id AND e.event = 'orchestrator.automation.triggered'),
       (SELECT created FROM flow_runs WHERE id = :run_id),
       (SELECT occurred FROM events WHERE resource_id = 'orchestrator.flow-run.' || :run_id
         AND event = 'orchestrator.flow-run.Pending'),
       (SELECT start_time FROM flow_runs WHERE id = :run_id)
"""


def latency(runs: int, database: str, redis_db: int) -> dict[str, list[float]]:
    """Milliseconds from the event's POST to each stage of its triggered run: the event stored
    (``received``), the evaluator's pass that fired (the ``automation.triggered`` event's
    ``occurred``: the pass's start), the run created, the run PENDING (claimed by the worker) and
    RUNNING (``start_time``: the flow-run process started)."""
    import datetime as dt

    from sqlalchemy import create_engine, text

    database_url, broker_url = harness.fresh_postgres(database, redis_db)
    env = harness.postgres_env(database_url, broker_url)
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    engine = create_engine(database_url)
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
                sent, event_id = dt.datetime.now(dt.timezone.utc), str(uuid.uuid4())
                stack.post("/events", [{"event": "bench.go", "resource": {"orchestrator.resource.id": "bench"},
                                        "payload": {"n": n}, "occurred": sent.isoformat(), "id": event_id}])

                def started(n: int = n) -> dict | None:  # type: ignore[type-arg]
                    items = stack.get(f"/flow_runs?deployment_id={deployment_id}&limit=200")["items"]
                    run = next((r for r in items if r["parameters"].get("n") == n), None)
                    return run if run and run["start_time"] else None

                run = harness.wait_until("the triggered run to start", started, 60, 0.01, describe=stack.all_logs)
                run_id = run["id"]
                harness.wait_until("the run to end", lambda run_id=run_id: stack.get(f"/flow_runs/{run_id}")["state"]
                                   ["type"] in harness.FINAL, 60, 0.02)
                if n < 2:
                    continue  # warm-up: imports, connections
                with engine.connect() as connection:
                    times = connection.execute(text(_STAGE_TIMES), {"event_id": event_id, "run_id": run_id}).one()
                for stage, moment in zip(STAGES, times, strict=True):
                    stages[stage].append((moment - sent).total_seconds() * 1000)
        finally:
            engine.dispose()
            stack.stop()
    return stages


def _backends_cpu(engine, database: str) -> float:
    """CPU seconds so far of every PostgreSQL backend connected to ``database`` (``/proc``: the
    server runs on this machine)."""
    from sqlalchemy import text

    with engine.connect() as connection:
        pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}).scalars()
        return cpu_seconds(list(pids))


def prepare_evaluation(count: int, database: str, redis_db: int, counting: bool = False):  # type: ignore[no-untyped-def]
    """100 automations and ``count`` events stored; returns (engine, an ``Evaluator`` whose cursor
    is before the events). ``counting``: the every-event triggers count to 1,000 instead (few
    firings: the common case)."""
    from orchestrator.schemas.automations import AutomationCreate
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
    from orchestrator.server.services import automations
    from orchestrator.server.triggers.evaluator import Evaluator

    database_url, _ = harness.fresh_postgres(database, redis_db)
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        for automation in bench_automations(counting):
            automations.create(session, AutomationCreate.model_validate(automation))
    evaluator = Evaluator(sessions)
    evaluator.run_pass()  # the cursor starts here
    for start in range(0, count, 1000):
        _store(evaluator, range(start, min(count, start + 1000)))
    return engine, evaluator


def bench_automations(counting: bool = False) -> list[dict]:  # type: ignore[type-arg]
    """100 automations: 10 event names x every event (or counting to 1,000) / threshold windows /
    for_each / proactive / compound; do-nothing actions (the evaluation's own cost)."""
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
    return [{"name": f"a{i}", "trigger": shapes[i % len(shapes)](i), "actions": [{"type": "do-nothing"}]}
            for i in range(100)]


def bench_event(i: int) -> dict:  # type: ignore[type-arg]
    """The ``i``-th event of the sequence: 1 in 5 named by some trigger."""
    return {"event": f"bench.e{i % 10}" if i % 5 == 0 else f"bench.other{i % 7}",
            "resource": {"orchestrator.resource.id": f"bench.thing.{i % 50}"}}


def evaluation_rate(count: int, database: str, redis_db: int, counting: bool = False,
                    per_pass: int = 0) -> dict[str, float]:
    """Passes of one evaluator, in this process, until the cursor reaches the last event: the rate,
    the firings, and the CPU seconds of this process and of its PostgreSQL backends. ``per_pass``:
    the events are stored that many at a time and evaluated after each (the short passes of a
    server under a steady load), only the passes counted."""
    engine, evaluator = prepare_evaluation(0 if per_pass else count, database, redis_db, counting)
    firings, elapsed, cpu, postgres_cpu = 0, 0.0, 0.0, 0.0
    for start in range(0, count, per_pass) if per_pass else [0]:
        if per_pass:
            _store(evaluator, range(start, min(count, start + per_pass)))
        backends, began, process = _backends_cpu(engine, database), time.perf_counter(), time.process_time()
        while True:
            work, _ = evaluator.run_pass()
            firings += work.firings if work else 0
            if work is None or evaluator.last_batch == 0:
                break
        elapsed += time.perf_counter() - began
        cpu += time.process_time() - process
        postgres_cpu += _backends_cpu(engine, database) - backends
    engine.dispose()
    return {"rate": count / elapsed, "firings": firings, "seconds": elapsed, "cpu": cpu,
            "postgres_cpu": postgres_cpu, "load": os.getloadavg()[0]}


def _store(evaluator, numbers: range) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.schemas.events import EventIn
    from orchestrator.server.services import events

    with evaluator.sessions.begin() as session:
        events.record(session, [EventIn.model_validate(bench_event(i)) for i in numbers])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_LAG = """
SELECT mx, floor, handled,
       (SELECT 1000 * extract(epoch FROM clock_timestamp() - e.received) FROM events AS e
         WHERE e.seq > c.floor AND NOT (e.seq = ANY(c.handled_seqs)) ORDER BY e.seq LIMIT 1)
FROM (SELECT floor, handled, ARRAY(SELECT jsonb_array_elements_text(CAST(handled AS jsonb))::bigint) AS handled_seqs
      FROM trigger_cursors WHERE name = 'triggers') AS c, (SELECT max(seq) AS mx FROM events) AS top
"""


def sustained(seconds: float, rate: int, database: str, redis_db: int) -> dict[str, object]:
    """``orch server start`` on PostgreSQL + Redis with the 100 automations of the evaluation rate
    (do-nothing actions, no worker); events POSTed at ``rate`` a second for ``seconds``, in a batch
    every 0.1 s; every second the evaluation lag: events recorded but not evaluated yet (the
    newest seq minus the trigger cursor's floor and the seqs it handled above it, the firings' own
    events included) and the age of the oldest of them (now - its ``received``)."""
    import json
    import threading
    import urllib.request

    from sqlalchemy import create_engine, text

    database_url, broker_url = harness.fresh_postgres(database, redis_db)
    samples: list[tuple[float, int, int, float, int]] = []  # seconds, posted, lag events, lag age ms, newest seq
    with tempfile.TemporaryDirectory() as root:
        stack = harness.Stack(Path(root), harness.postgres_env(database_url, broker_url))
        engine = create_engine(database_url)
        try:
            server = stack.start_server()
            for automation in bench_automations():
                stack.post("/automations", automation)
            posted = [0]
            stop = threading.Event()
            per_batch = max(1, rate // 10)

            def load() -> None:
                began, i = time.perf_counter(), 0
                while not stop.is_set():
                    body = json.dumps([bench_event(n) for n in range(i, i + per_batch)]).encode()
                    request = urllib.request.Request(f"{stack.api_url}/events", data=body, method="POST",
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=60) as response:
                        response.read()
                    i += per_batch
                    posted[0] = i
                    ahead = began + i / rate - time.perf_counter()
                    if ahead > 0:
                        stop.wait(ahead)  # behind schedule: the next batch at once (the rate is what got in)

            server_cpu, postgres_cpu = _cpu_seconds(server.pid), _backends_cpu(engine, database)
            loader = threading.Thread(target=load, daemon=True)
            began = time.perf_counter()
            loader.start()
            with engine.connect() as connection:
                while (elapsed := time.perf_counter() - began) < seconds:
                    row = connection.execute(text(_LAG)).one()
                    connection.commit()
                    handled = {int(s) for s in row[2]}
                    lag = (row[0] or 0) - row[1] - len({s for s in handled if s <= (row[0] or 0)})
                    samples.append((elapsed, posted[0], lag, float(row[3] or 0.0), row[0] or 0))
                    time.sleep(max(0.0, 1.0 - (time.perf_counter() - began - elapsed)))
            stop.set()
            loader.join(60)
            result = {"samples": samples, "posted": posted[0], "seconds": time.perf_counter() - began,
                      "server_cpu": _cpu_seconds(server.pid) - server_cpu,
                      "postgres_cpu": _backends_cpu(engine, database) - postgres_cpu, "load": os.getloadavg()[0]}
        finally:
            engine.dispose()
            stack.stop()
    return result


def _print_sustained(r: dict, rate: int) -> None:  # type: ignore[type-arg]
    samples = r["samples"]
    print(f"\nSustained load: {rate:,} events/s asked, {r['posted'] / r['seconds']:,.0f} events/s POSTed over "
          f"{r['seconds']:.0f} s against 100 automations; server CPU {r['server_cpu']:.1f} s, PostgreSQL "
          f"{r['postgres_cpu']:.1f} s (load average {r['load']:.1f} at the end)\n")
    print("| second | events POSTed | events recorded (the firings' included) | lag (recorded, not evaluated) "
          "| age of the oldest (ms) |\n|---|---|---|---|---|")
    for seconds, posted, lag, age, newest in samples[::max(1, len(samples) // 30)]:
        print(f"| {seconds:.0f} | {posted:,} | {newest:,} | {lag:,} | {age:,.0f} |")
    third = max(1, len(samples) // 3)
    for name, part in (("first third", samples[:third]), ("last third", samples[-third:])):
        print(f"\n{name}: lag mean {statistics.mean(s[2] for s in part):,.0f} events, max "
              f"{max(s[2] for s in part):,}; age mean {statistics.mean(s[3] for s in part):,.0f} ms, "
              f"max {max(s[3] for s in part):,.0f} ms", end="")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="latency: triggered runs measured (0: none)")
    parser.add_argument("--events", type=int, default=20_000, help="evaluation rate: events stored (0: skip)")
    parser.add_argument("--database", default=DATABASE, help="PostgreSQL database (dropped and re-created)")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB, help="Redis database number (flushed)")
    parser.add_argument("--sustained", type=float, default=0, metavar="SECONDS",
                        help="sustained load instead: POST --rate events/s for SECONDS, sampling the lag")
    parser.add_argument("--rate", type=int, default=2000, help="sustained load: events POSTed a second")
    parser.add_argument("--per-pass", type=int, default=0, metavar="N",
                        help="evaluation rate: store N events, evaluate them, and again (short passes)")
    args = parser.parse_args()
    if args.sustained:
        _print_sustained(sustained(args.sustained, args.rate, args.database, args.redis_db), args.rate)
        return
    rates = [evaluation_rate(args.events, args.database, args.redis_db, counting=counting, per_pass=args.per_pass)
             for counting in (False, True)] if args.events else []
    stages = latency(args.runs, args.database, args.redis_db) if args.runs else {}
    per_pass = f" --per-pass {args.per_pass}" if args.per_pass else ""
    print(f"\n`python bench/triggers.py --runs {args.runs} --events {args.events}{per_pass}` — {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, PostgreSQL + Redis\n")
    print("| metric | target | value |\n|---|---|---|")
    names = {"stored": "event stored (API)", "evaluated": "the evaluator's pass begins (wake)",
             "created": "triggered run created", "pending": "run PENDING (claimed by the worker)",
             "running": "run RUNNING (process worker)"}
    for stage, values in stages.items():
        target = "≤ 150 ms" if stage == "running" else ""
        print(f"| event POSTed → {names[stage]}, p50 / p95 | {target} | {statistics.median(values):.0f} / "
              f"{_p(values, 0.95):.0f} ms |")
    for title, r in zip(["evaluation, 100 automations, every-event triggers",
                         "… the same with few firings (window counts instead of every-event triggers)"], rates):
        print(f"| {title}: {args.events} events, {r['firings']:.0f} firings (each recording 2 events) | "
              f"≥ 2,000 events/s | {r['rate']:,.0f} events/s; CPU {r['cpu']:.1f} s evaluator + "
              f"{r['postgres_cpu']:.1f} s PostgreSQL = {args.events / (r['cpu'] + r['postgres_cpu']):,.0f} "
              f"events/CPU-s (load {r['load']:.1f}) |")


if __name__ == "__main__":
    main()
