"""Write -> seen on the live event stream, on one replica and across two.

Starts two ``orch server start`` replicas (A and B) on one PostgreSQL database (``ha_events_stream``,
recreated) and Redis db 6, with the default settings (the hub is LISTEN/NOTIFY; the safety re-read is
30 s away). A subscriber on A and one on B read ``GET /api/events/stream?event=bench.*`` (raw SSE).
Then ``--tries`` times: one event is sent through A (``POST /api/events``), and the time from
sending it to each subscriber reading its ``data:`` line is recorded. Prints a Markdown table.

Usage: python bench/events_stream.py [--tries 200]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import harness  # the one way tests and benchmarks start the system

DATABASE, REDIS_DB = "ha_events_stream", 6
GAP = 0.02  # between two writes: each is timed alone


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@contextlib.contextmanager
def replica(root: Path, name: str, database_url: str, broker_url: str) -> Iterator[int]:
    stack = harness.Stack(root / name, harness.postgres_env(database_url, broker_url), orch=harness.ORCH_SCRIPT)
    try:
        stack.start_server(timeout=60)
        yield stack.port
    finally:
        stack.stop(grace=30)


class Subscriber:
    """Reads the stream on a thread; records when each event (by its payload's ``n``) arrived."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.connection.request("GET", "/api/events/stream?event=bench.*")
        self.response = self.connection.getresponse()
        self.seen: dict[int, float] = {}
        self.open = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.open.wait(30):
            raise RuntimeError("the stream did not open")

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self.response:
                if raw.startswith(b": open"):
                    self.open.set()
                elif raw.startswith(b"data: "):
                    self.seen[json.loads(raw[6:])["payload"]["n"]] = time.perf_counter()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.sock.shutdown(2)
        self.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=200)
    args = parser.parse_args()
    urls = harness.fresh_postgres(DATABASE, REDIS_DB)
    with tempfile.TemporaryDirectory() as tmp, replica(Path(tmp), "a", *urls) as port_a, \
            replica(Path(tmp), "b", *urls) as port_b:
        same, other = Subscriber(port_a), Subscriber(port_b)
        writer = http.client.HTTPConnection("127.0.0.1", port_a, timeout=60)
        sent: dict[int, float] = {}
        for n in range(args.tries):
            body = json.dumps([{"id": str(uuid.uuid4()), "event": "bench.thing", "payload": {"n": n},
                                "resource": {"orchestrator.resource.id": "bench.thing.1"}}])
            sent[n] = time.perf_counter()
            writer.request("POST", "/api/events", body, {"Content-Type": "application/json"})
            writer.getresponse().read()
            time.sleep(GAP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(same.seen) < args.tries or len(other.seen) < args.tries):
            time.sleep(0.1)
        same.close()
        other.close()
    rows = []
    for label, subscriber in (("same replica (A)", same), ("other replica (B)", other)):
        delays = [subscriber.seen[n] - sent[n] for n in sent if n in subscriber.seen]
        missing = args.tries - len(delays)
        rows.append(f"| {label} | {pct(delays, 0.5) * 1000:.1f} ms | {pct(delays, 0.95) * 1000:.1f} ms | {missing} |")
    print(f"| write through A -> seen on the stream ({args.tries} events, load {os.getloadavg()[0]:.1f}) "
          "| p50 | p95 | missed |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
