"""What publishing a due run costs through Celery's public API against pools/publish.py's direct write.

  python bench/publish_paths.py [--config postgres|embedded|both] [--rounds 3] [--messages 2000] [--redis-db 14]

Two measures, each alternating the two publishers so that the machine's load falls on both alike:

1. **One publish**, in this process: wall and CPU time per message of
   - ``direct``: ``pools/publish.py`` (one LPUSH on Redis, one INSERT on the embedded broker);
   - ``celery``: ``app.send_task(..., queue=q, retry=False)``, Celery building the protocol-2
     message and kombu writing it through the app's pooled producer (``CeleryBroker`` without its
     direct publisher);
   on Redis (database ``--redis-db`` of 127.0.0.1:6379, which part 2 empties) and on an embedded
   broker file.
2. **Create-run API throughput**: ``orch server start`` (with a worker connected, as
   ``bench/compare/profile_ours.py create-rate``) taking 500 sequential POSTs per round, once with
   each publisher per round; the ``celery`` server is the same code started with the direct
   publisher switched off (``pools.publish.direct_publisher`` returning None, as for a transport it
   does not know), so the only difference is the publish.

Prints the figures; bench/RESULTS.md ("Publishing through Celery's API") has them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compare import measures
from compare.ours import OursSide

PUBLISHERS = ("direct", "celery")
# Starts `orch` with the publisher named by argv[1]; "celery" switches the direct publisher off.
LAUNCH = """
import sys
if sys.argv.pop(1) == "celery":
    import pools.publish
    pools.publish.direct_publisher = lambda url, via_celery: None
from orchestrator.cli.main import main
sys.argv[0] = "orch"
sys.exit(main())
"""


def publish_cost(url: str, messages: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(wall µs, CPU µs) per message, per round, for each publisher."""
    from pools.broker import CeleryBroker
    from pools.names import run_queue

    direct, celery = CeleryBroker(url), CeleryBroker(url)
    celery._direct = None  # the public path only
    queue = run_queue("bench-publish", uuid.uuid4().hex)
    paths: dict[str, Callable[[], None]] = {
        "direct": lambda: direct.publish(queue, uuid.uuid4()),
        "celery": lambda: celery.publish(queue, uuid.uuid4()),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in PUBLISHERS}
    try:
        for publish in paths.values():  # warm-up: connections, kombu's tables, the queue's row
            for _ in range(50):
                publish()
        for _ in range(rounds):
            for name, publish in paths.items():
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(messages):
                    publish()
                results[name].append(((time.perf_counter() - wall) / messages * 1e6,
                                      (time.process_time() - cpu) / messages * 1e6))
            direct.drain(queue, timeout=1)  # keep the queue short between rounds
    finally:
        direct.close()
        celery.close()
    return results


class PublisherSide(OursSide):
    def __init__(self, config: str, publisher: str, redis_db: int) -> None:
        super().__init__(config, database="orch_bench_publish", redis_db=redis_db)
        self.publisher = publisher

    def server_argv(self) -> list[str]:
        return [sys.executable, "-c", LAUNCH, self.publisher, "server", "start", "--port", str(self.port)]


def create_rate(config: str, publisher: str, redis_db: int, per_round: int = 500) -> float:
    side = PublisherSide(config, publisher, redis_db)
    try:
        side.setup()
        for _ in range(50):  # warm-up: connections, prepared statements, the broker's queue
            side.create_run("idle", strict=True)
        began = time.perf_counter()
        ids = [side.create_run("idle", strict=True) for _ in range(per_round)]
        rate = per_round / (time.perf_counter() - began)
        measures.cleanup_runs(side, ids)
        return rate
    finally:
        side.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=["postgres", "embedded", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--redis-db", type=int, default=14, help="this benchmark's Redis database, flushed")
    args = parser.parse_args()
    configs = ["postgres", "embedded"] if args.config == "both" else [args.config]
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    for config in configs:
        with tempfile.TemporaryDirectory() as tmp:
            url = (f"redis://127.0.0.1:6379/{args.redis_db}" if config == "postgres"
                   else f"sqla+sqlite:///{Path(tmp) / 'broker.db'}")
            costs = publish_cost(url, args.messages, args.rounds)
        broker = "Redis" if config == "postgres" else "embedded broker"
        for name in PUBLISHERS:
            walls, cpus = [w for w, _ in costs[name]], [c for _, c in costs[name]]
            print(f"one publish, {broker}, {name}: wall {statistics.median(walls):.0f} µs, CPU "
                  f"{statistics.median(cpus):.0f} µs (rounds: " + ", ".join(f"{w:.0f}" for w in walls) + ")")
        rates: dict[str, list[float]] = {name: [] for name in PUBLISHERS}
        for _ in range(args.rounds):
            for name in PUBLISHERS:
                rates[name].append(create_rate(config, name, args.redis_db))
        for name in PUBLISHERS:
            print(f"create-run API ({config}), {name}: median {statistics.median(rates[name]):.0f} /s (rounds: "
                  + ", ".join(f"{r:.0f}" for r in rates[name]) + ")")
        cost = 1 - statistics.median(rates["celery"]) / statistics.median(rates["direct"])
        print(f"create-run API ({config}): Celery's public path costs {cost:.1%} of the throughput")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
