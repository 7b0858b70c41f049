"""Event ingest and a filtered query at scale, on PostgreSQL through the real API server.

1. **ingest**: one ``orch server start`` on a fresh database (``--database``, default ``ha_events``)
   and Redis db ``--redis-db`` (default 6); ``--threads`` clients, each on its own keep-alive
   connection, send ``POST /api/events`` with batches of 100 events, then (``--single-threads`` of
   them, default as many) with one event per request, for ``--seconds`` each. Events/s counted from the answers (every event new, each with 1 related
   resource); also the CPU each event cost the server's process tree and the PostgreSQL backends of
   its database (``/proc``: steadier than events/s on a shared machine).
2. **query at 5,000,000**: a database of its own (``ha_events_5m``), migrated, filled with one
   ``INSERT ... SELECT generate_series`` (5,000,000 events over 10,000 resources, spread over 7 days),
   analysed; then a server on it answers ``GET /api/events?resource=<one id>&limit=50`` ``--tries``
   times (p50/p95 of the whole HTTP round trip). The database is dropped afterwards.

Usage: python bench/events_ingest.py [--seconds 15] [--threads 4] [--rows 5000000]. Markdown out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import harness  # the one way tests and benchmarks start the system

DATABASE, REDIS_DB = "ha_events", 6


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@contextlib.contextmanager
def server(root: Path, database_url: str, broker_url: str) -> Iterator[tuple[int, CpuMeter]]:
    """A server on ``database_url``: its port, and the meter of the CPU its process tree and the
    database's backends use."""
    stack = harness.Stack(root, harness.postgres_env(database_url, broker_url), orch=harness.ORCH_SCRIPT)
    try:
        process = stack.start_server(timeout=60)
        yield stack.port, CpuMeter(process.pid, database_url.rsplit("/", 1)[1])
    finally:
        stack.stop(grace=30)


class CpuMeter:
    """CPU seconds (utime + stime, ``/proc/<pid>/stat``) of the server's process tree and of the
    PostgreSQL backends serving its database. Sampled every ``SAMPLE_SECONDS`` while measuring: a
    backend that exits meanwhile (a pool's overflow connection) keeps what it was last seen using."""

    SAMPLE_SECONDS = 0.25

    def __init__(self, server_pid: int, database: str) -> None:
        self.server_pid, self.database = server_pid, database

    @contextlib.contextmanager
    def measuring(self) -> Iterator[list[float]]:
        """Yields a list that holds [server seconds, database seconds] once the block ends."""
        import psycopg

        out: list[float] = []
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            first = self._sample(admin)
            last = dict(first)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(self.SAMPLE_SECONDS):
                    last.update(self._sample(admin))

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                yield out
            finally:
                done.set()
                sampler.join()
                last.update(self._sample(admin))
        used = {key: value - first.get(key, 0.0) for key, value in last.items()}
        out[:] = [sum(v for (side, _), v in used.items() if side == "server"),
                  sum(v for (side, _), v in used.items() if side == "db")]

    def _sample(self, admin: Any) -> dict[tuple[str, int], float]:
        backends = [row[0] for row in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                    (self.database,))]
        return {**{("server", pid): cpu for pid, cpu in cpu_seconds(tree_pids(self.server_pid)).items()},
                **{("db", pid): cpu for pid, cpu in cpu_seconds(backends).items()}}


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def post(connection: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    connection.request(method, "/api" + path, None if body is None else json.dumps(body),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{path}: {response.status} {data[:300]!r}")
    return json.loads(data)


def event(i: int) -> dict[str, Any]:
    # With ``occurred``, as ``emit_event`` and workers send it: the server validates (and bounds) it.
    return {"id": str(uuid.uuid4()), "occurred": dt.datetime.now(dt.UTC).isoformat(),
            "event": "bench.thing.happened", "payload": {"i": i},
            "resource": {"orchestrator.resource.id": f"bench.thing.{i % 1000}", "orchestrator.resource.name": "t"},
            "related": [{"orchestrator.resource.id": "orchestrator.tag.bench", "orchestrator.resource.role": "tag"}]}


def ingest(port: int, meter: CpuMeter, batch: int, seconds: float, threads: int) -> tuple[float, float, float]:
    """Events recorded per second by ``threads`` clients sending batches of ``batch``, and the CPU
    microseconds each cost the server and the database."""
    totals = [0] * threads
    deadline = time.perf_counter() + seconds

    def client(slot: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            totals[slot] += post(connection, "POST", "/events", [event(n) for n in range(batch)])["recorded"]
        connection.close()

    with meter.measuring() as used:
        began = time.perf_counter()
        workers = [threading.Thread(target=client, args=(slot,)) for slot in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rate = sum(totals) / (time.perf_counter() - began)
    recorded = max(sum(totals), 1)
    return rate, used[0] / recorded * 1e6, used[1] / recorded * 1e6


def psql(database: str, sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                   check=True, timeout=600, capture_output=True)


FILL = """
INSERT INTO events (id, occurred, received, event, resource_id, resource, related, payload)
SELECT md5(g::text)::uuid,
       now() - (g % 604800) * interval '1 second',
       now(),
       CASE g % 4 WHEN 0 THEN 'orchestrator.flow-run.Running' WHEN 1 THEN 'orchestrator.flow-run.Completed'
                  WHEN 2 THEN 'orchestrator.deployment.updated' ELSE 'my.app.uploaded' END,
       'bench.thing.' || (g % 10000),
       jsonb_build_object('orchestrator.resource.id', 'bench.thing.' || (g % 10000), 'env', 'prod'),
       '[]'::jsonb, jsonb_build_object('i', g)
FROM generate_series(1, {rows}) AS g;
ANALYZE events;
"""


def query_at_scale(root: Path, database: str, redis_db: int, rows: int, tries: int) -> tuple[float, float, float]:
    """Seconds to fill, and p50/p95 of one resource's newest page."""
    database_url, broker_url = harness.fresh_postgres(database, redis_db)
    try:
        subprocess.run([*harness.ORCH_SCRIPT, "server", "migrate"], check=True, timeout=120, capture_output=True,
                       env={**harness.clean_env(), **harness.postgres_env(database_url, broker_url),
                            "ORCH_HOME": str(root / "migrate")})
        began = time.perf_counter()
        psql(database, FILL.format(rows=rows))
        filled = time.perf_counter() - began
        with server(root / "big", database_url, broker_url) as (port, _meter):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            times = []
            for n in range(tries):
                sent = time.perf_counter()
                page = post(connection, "GET", f"/events?resource=bench.thing.{(n * 7919) % 10000}&limit=50")
                times.append(time.perf_counter() - sent)
                assert len(page["events"]) == min(50, rows // 10000), page
        return filled, pct(times, 0.5), pct(times, 0.95)
    finally:
        subprocess.run([*harness.PG_ADMIN, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False, timeout=120,
                       capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--single-threads", type=int, default=None,
                        help="client threads sending one event per request (default: --threads)")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--tries", type=int, default=100)
    parser.add_argument("--database", default=DATABASE, help="recreated; the 5M query uses <database>_5m")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        with server(Path(tmp) / "ingest", *harness.fresh_postgres(args.database, args.redis_db)) as (port, meter):
            batched = ingest(port, meter, 100, args.seconds, args.threads)
            single = ingest(port, meter, 1, args.seconds, args.single_threads or args.threads)
        subprocess.run([*harness.PG_ADMIN, f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)"], check=False, timeout=120,
                       capture_output=True)
        if args.rows:
            filled, p50, p95 = query_at_scale(Path(tmp), f"{args.database}_5m", args.redis_db, args.rows, args.tries)
    single_threads = args.single_threads or args.threads
    print(f"| events, PostgreSQL, load {load:.1f} -> {os.getloadavg()[0]:.1f} | figure | CPU per event: server + database |")
    print("|---|---|---|")
    print(f"| ingest, batches of 100, {args.threads} clients ({args.seconds:g} s) | {batched[0]:,.0f} events/s "
          f"| {batched[1]:,.0f} + {batched[2]:,.0f} µs |")
    print(f"| ingest, one event per request, {single_threads} clients ({args.seconds:g} s) | {single[0]:,.0f} events/s "
          f"| {single[1]:,.0f} + {single[2]:,.0f} µs |")
    if args.rows:
        print(f"| fill {args.rows:,} rows (one INSERT ... SELECT generate_series + ANALYZE) | {filled:.0f} s | |")
        print(f"| `GET /api/events?resource=<id>&limit=50` at {args.rows:,} events ({args.tries} tries) "
              f"| p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms | |")


if __name__ == "__main__":
    main()
