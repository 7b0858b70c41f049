"""History does not slow anything (issue 20 point 1, issue 19's page benchmark), on PostgreSQL + Redis.

1. Builds the PostgreSQL database ``orch_history`` once (again only with ``--rebuild``;
   ``bench/history_database.py``): ``orch server start`` migrates it, pool ``bench`` and
   deployments ``noop/bench`` and ``noop/other`` are made with the CLI and the SDK, then
   server-side ``INSERT ... SELECT generate_series`` writes the history: ``--runs`` finished runs
   (1,000,000; a year, two runs per expected start time so the order has ties; 1 % FAILED, some
   CRASHED and CANCELLED, a third tagged ``nightly``, a tenth of deployment ``other``), two log
   lines per run and ``--events`` events (5,000,000: five per run while they last, each with two
   related resources indexed), then ``VACUUM ANALYZE``. Before the ANALYZE, the create -> RUNNING
   of a few runs is measured ("right after the history was written", issue 20's report of a run
   Late for 60 s).
2. Starts ``orch server start`` and ``orch worker start`` on it (``tests/harness.py``, as
   ``bench/skeleton.py``), and measures, as a client on the same machine over one keep-alive
   connection (so: server time plus a loopback round trip), p50 and p95 of ``--reads`` requests:
   every API list (first page, the page after it by cursor, and a page half-way down by cursor),
   with typical filters; single-object reads; a ``/metrics`` scrape; each UI page.
3. Measures API create -> RUNNING (server: ``start_time - created``) on this database and on an
   empty one (``orch_history_empty``, rebuilt each time) with the same stack.
4. Times passes of the dispatcher, the reaper and the scheduler, in this process, on both databases.

Prints a table and writes it to the "History" section of ``bench/RESULTS.md`` with the date, the
command and the load average.

Usage: python bench/history.py [--rebuild] [--runs 1000000] [--events 5000000] [--reads 15] [--c2r 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from bench.history_database import (
    DATABASE,
    EMPTY,
    REDIS_DB,
    Stack,
    analyze,
    build_history,
    built,
    database_url,
    psql,
)
from bench.skeleton import measure_create_to_running, pct
from tests import harness

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## History: 1M runs, 2M log lines, 5M events (bench/history.py)"

# --- reads ---------------------------------------------------------------------------------------


class Reader:
    """GETs over one keep-alive connection, timed."""

    def __init__(self, api_url: str) -> None:
        url = urllib.parse.urlsplit(api_url)
        self.connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)

    def get(self, path: str) -> tuple[float, Any, str | None]:
        t0 = time.perf_counter()
        self.connection.request("GET", path, headers={"Accept": "text/html, application/json"})
        answer = self.connection.getresponse()
        body = answer.read()
        took = time.perf_counter() - t0
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {body[:300]!r}")
        link = answer.getheader("Link")
        found = re.fullmatch(r'<([^>]+)>; rel="next"', link) if link else None
        next_path = None
        if found:
            parts = urllib.parse.urlsplit(found.group(1))
            next_path = f"{parts.path}?{parts.query}"
        kind = answer.getheader("content-type", "")
        return took, json.loads(body) if kind.startswith("application/json") else None, next_path

    def time(self, path: str, reads: int) -> tuple[float, float]:
        for _ in range(2):  # warm-up
            self.get(path)
        times = [self.get(path)[0] for _ in range(reads)]
        return pct(times, 0.5), pct(times, 0.95)


def read_paths(stack: Stack, reader: Reader) -> list[tuple[str, str]]:
    """(label, path) of every read measured; later pages are found by following the first page's
    cursor, and a deep one from a run half-way down the history."""
    api = "/api"
    bench = stack.client.request("GET", "/deployments/name/noop/bench")
    other = stack.client.request("GET", "/deployments/name/noop/other")
    _, first, second = reader.get(f"{api}/flow_runs?limit=50")
    count = int(psql("SELECT count(*) FROM flow_runs WHERE name LIKE 'history-%'", DATABASE))
    middle = stack.client.request("GET", "/flow_runs", params={"name": f"history-{count // 2}"})["items"][0]
    from orchestrator.server.services import keyset

    deep = keyset.encode((dt.datetime.fromisoformat(middle["expected_start_time"]), middle["id"]))
    run = middle["id"]
    events_page = reader.get(f"{api}/events?limit=50")[1]["next_page"]
    events_second = f"{api}/events?limit=50&page={events_page}" if events_page else None
    paths = [
        ("flow runs, first page", f"{api}/flow_runs?limit=50"),
        ("flow runs, next page (cursor)", second or ""),
        ("flow runs, page half-way down (cursor)", f"{api}/flow_runs?limit=50&cursor={deep}"),
        ("flow runs, deprecated offset=1000", f"{api}/flow_runs?limit=50&offset=1000"),
        ("flow runs ?state=FAILED", f"{api}/flow_runs?limit=50&state=FAILED"),
        ("flow runs ?state=SCHEDULED&state=RUNNING", f"{api}/flow_runs?limit=50&state=SCHEDULED&state=RUNNING"),
        ("flow runs ?state_name=Late", f"{api}/flow_runs?limit=50&state_name=Late"),
        ("flow runs ?deployment_id (10 % of runs)", f"{api}/flow_runs?limit=50&deployment_id={other['id']}"),
        ("flow runs ?deployment_id&state=FAILED", f"{api}/flow_runs?limit=50&deployment_id={bench['id']}&state=FAILED"),
        ("flow runs ?work_pool_name", f"{api}/flow_runs?limit=50&work_pool_name=bench"),
        ("flow runs ?tag=nightly", f"{api}/flow_runs?limit=50&tag=nightly"),
        ("flow runs ?name=", f"{api}/flow_runs?name=history-{count // 3}"),
        ("flow run by id", f"{api}/flow_runs/{run}"),
        ("flow run's logs", f"{api}/flow_runs/{run}/logs"),
        ("flow run's states", f"{api}/flow_runs/{run}/states"),
        ("flow run's task runs", f"{api}/flow_runs/{run}/task_runs"),
        ("deployments", f"{api}/deployments"),
        ("deployment versions", f"{api}/deployments/{bench['id']}/versions"),
        ("work pools", f"{api}/work_pools"),
        ("work pool", f"{api}/work_pools/bench"),
        ("queues", f"{api}/work_pools/bench/queues"),
        ("workers", f"{api}/work_pools/bench/workers"),
        ("automations", f"{api}/automations"),
        ("webhooks", f"{api}/webhooks"),
        ("api keys", f"{api}/api_keys"),
        ("events, first page", f"{api}/events?limit=50"),
        ("events, next page", events_second or ""),
        ("events ?resource=<a run>", f"{api}/events?limit=50&resource=orchestrator.flow-run.{run}"),
        ("events ?related=<a deployment>", f"{api}/events?limit=50&related=orchestrator.deployment.{other['id']}"),
        ("events ?event=orchestrator.flow-run.Failed", f"{api}/events?limit=50&event=orchestrator.flow-run.Failed"),
        ("metrics scrape", "/metrics"),
        ("UI /", "/"),
        ("UI /runs", "/runs"),
        ("UI /runs?state=FAILED", "/runs?state=FAILED"),
        ("UI /runs, an older page", f"/runs?older={middle['expected_start_time']}~{run}"),
        ("UI /runs/{id}", f"/runs/{run}"),
        ("UI /deployments", "/deployments"),
        ("UI /deployments/{id}", f"/deployments/{bench['id']}"),
        ("UI /pools", "/pools"),
        ("UI /pools/{name}", "/pools/bench"),
        ("UI /events", "/events"),
        ("UI /automations", "/automations"),
    ]
    missing = [label for label, path in paths if not path]
    if missing:
        raise RuntimeError(f"no next page for: {missing}")
    del first
    return paths


# --- create -> RUNNING and service passes --------------------------------------------------------


def create_to_running(stack: Stack, runs: int) -> dict[str, float]:
    deployment_id = stack.client.request("GET", "/deployments/name/noop/bench")["id"]
    measure_create_to_running(stack, deployment_id, 2, poll=False)
    phases = measure_create_to_running(stack, deployment_id, runs, poll=False)
    return {"p50": pct(phases["server"], 0.5), "p95": pct(phases["server"], 0.95),
            "claim_p50": pct(phases["claim"], 0.5)}


def service_passes(database: str, passes: int = 7) -> dict[str, float]:
    """p50 of one pass of each background service, run in this process on ``database`` (the
    server stopped, so nothing else moves its runs)."""
    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from orchestrator.server.dispatcher import Dispatcher
    from orchestrator.server.reaper import Reaper
    from orchestrator.server.scheduler import Scheduler
    from pools.broker import MemoryBroker

    engine = make_engine(database_url(database))
    sessions = make_sessionmaker(engine)
    dispatcher = Dispatcher(sessions, MemoryBroker(), redispatch_seconds=30)
    reaper = Reaper(sessions, heartbeat_seconds=10, interval_seconds=5, cancelling_timeout_seconds=60)
    scheduler = Scheduler(sessions)
    jobs: dict[str, Callable[[], Any]] = {"dispatcher pass": dispatcher.tick, "reaper pass": reaper.tick,
                                          "scheduler pass": scheduler.run_once}
    out = {}
    try:
        for label, job in jobs.items():
            job()
            times = []
            for _ in range(passes):
                t0 = time.perf_counter()
                job()
                times.append(time.perf_counter() - t0)
            out[label] = pct(times, 0.5)
    finally:
        engine.dispose()
    return out


# --- the run -------------------------------------------------------------------------------------


def measure_empty(c2r_runs: int) -> tuple[dict[str, float], dict[str, float]]:
    harness.fresh_postgres(EMPTY, REDIS_DB)
    stack = Stack(EMPTY)
    try:
        stack.setup()
        stack.start_workers()
        c2r = create_to_running(stack, c2r_runs)
    finally:
        stack.stop()
    return c2r, service_passes(EMPTY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help=f"drop and build {DATABASE} again")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--reads", type=int, default=15, help="timed requests per read (default 15)")
    parser.add_argument("--c2r", type=int, default=15, help="runs per create -> RUNNING figure (default 15)")
    args = parser.parse_args()
    load_start = os.getloadavg()
    notes: list[str] = []

    print("[empty] create -> RUNNING and service passes on an empty database ...", flush=True)
    empty_c2r, empty_passes = measure_empty(args.c2r)
    print(f"  create -> RUNNING p50 {empty_c2r['p50'] * 1000:.0f} ms; passes {empty_passes}", flush=True)

    fresh = args.rebuild or not built(DATABASE)
    if fresh:
        harness.fresh_postgres(DATABASE, REDIS_DB)
    stack = Stack(DATABASE)
    try:
        stack.setup()
        stack.start_workers()
        if fresh:
            print(f"[history] writing {args.runs:,} runs, {2 * args.runs:,} log lines, {args.events:,} events ...",
                  flush=True)
            took = build_history(stack, args.runs, args.events)
            before = create_to_running(stack, 5)
            notes.append(f"History written in {sum(took.values()):.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in took.items())}); "
                         f"create → RUNNING right after it, before ANALYZE: p50 {before['p50'] * 1000:.0f} ms, "
                         f"max of 5 {before['p95'] * 1000:.0f} ms.")
            print(f"  {notes[-1]}", flush=True)
            notes.append(f"VACUUM ANALYZE: {analyze(DATABASE):.0f} s.")
        counts = psql("SELECT (SELECT count(*) FROM flow_runs), (SELECT count(*) FROM logs), "
                      "(SELECT count(*) FROM events)", DATABASE)
        print(f"[history] rows (runs|logs|events): {counts}; reads ...", flush=True)
        reader = Reader(stack.api_url)
        reads = [(label, *reader.time(path, args.reads)) for label, path in read_paths(stack, reader)]
        print("[history] create -> RUNNING ...", flush=True)
        history_c2r = create_to_running(stack, args.c2r)
    finally:
        stack.stop()
    history_passes = service_passes(DATABASE)

    lines = [f"| read ({args.reads} requests; client-side over one keep-alive loopback connection) | target | p50 | p95 |",
             "|---|---|---|---|"]
    for label, p50, p95 in reads:
        target = "≤ 50 ms" if not label.startswith("UI") else "≤ 100 ms"
        lines.append(f"| {label} | {target} | {p50 * 1000:.1f} ms | {p95 * 1000:.1f} ms |")
    lines += ["", "| figure | empty database | with the history | target |", "|---|---|---|---|",
              (f"| create → RUNNING p50 (server, {args.c2r} runs) | {empty_c2r['p50'] * 1000:.0f} ms | "
              f"{history_c2r['p50'] * 1000:.0f} ms | within 20 % |"),
              f"| create → RUNNING p95 | {empty_c2r['p95'] * 1000:.0f} ms | {history_c2r['p95'] * 1000:.0f} ms | |",
              (f"| ↳ created → PENDING p50 | {empty_c2r['claim_p50'] * 1000:.0f} ms | "
              f"{history_c2r['claim_p50'] * 1000:.0f} ms | |")]
    for label in empty_passes:
        lines.append(f"| {label} p50 (in-process, 7 passes) | {empty_passes[label] * 1000:.1f} ms | "
                     f"{history_passes[label] * 1000:.1f} ms | no slower than 20 % |")
    table = "\n".join(lines)
    print(table)
    write_results(table, notes, counts, load_start, sys.argv[1:])


def write_results(table: str, notes: list[str], counts: str, load_start: tuple[float, float, float],
                  argv: list[str]) -> None:
    load_end = os.getloadavg()
    header = (f"{SECTION}\n\n- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; "
              f"command: `python bench/history.py {' '.join(argv)}`\n"
              f"- Load average (1, 5, 15 min) {load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f} at the "
              f"start, {load_end[0]:.1f} / {load_end[1]:.1f} / {load_end[2]:.1f} at the end, on {os.cpu_count()} cores "
              "shared with other work: figures to re-run on a quiet machine.\n"
              f"- Rows (runs | log lines | events): {counts.replace('|', ' | ')}\n"
              + "".join(f"- {note}\n" for note in notes) + "\n")
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = header + table + "\n"
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
