"""What the PostgreSQL hub costs per published change at a steady rate (issue 22: the create-run API
publishes one per create, ~1.3 ms apart with one sequential client at 770 creates/s).

    PYTHONPATH=<checkout> python bench/hub_notify_rate.py [--every-ms 1.3] [--count 4000]
                                                        [--database orch_bench_hub_rate] [--replicas 2]

One process plays a server: a ``PostgresHub`` of this checkout (its sender and its listener, as
``orch server start`` runs them) publishing a create's announcement (the run, its Scheduled event)
every ``--every-ms``, paced to the clock; ``--replicas`` - 1 more hubs listen as other replicas would.
Prints the CPU per publication of this process (sender, listeners, the pacing loop) and of the
PostgreSQL backends of the database (recreated), and how many notifications the replicas' listeners
received. Run it from two checkouts in turn, alternating, to compare them (the CPU is steadier than
the wall clock on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # this checkout, unless PYTHONPATH names another

from compare.common import cpu_seconds

from orchestrator.server.hub import EVENTS, RUNS
from orchestrator.server.hub.postgres import PostgresHub
from tests.harness import PG_ADMIN


def psql(sql: str) -> str:
    return subprocess.run([*PG_ADMIN[:-1], "-tAc", sql], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-ms", type=float, default=1.3)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--database", default="orch_bench_hub_rate", help="PostgreSQL database (recreated)")
    parser.add_argument("--replicas", type=int, default=2, help="hubs listening, the publishing one included")
    args = parser.parse_args()
    psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    psql(f"CREATE DATABASE {args.database}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}"
    hubs = [PostgresHub(url) for _ in range(args.replicas)]
    received = [0] * len(hubs)
    for k, hub in enumerate(hubs):
        hub.start()
        receive = hub._received  # count what each listener is woken for (its own hub's included)

        def counted(payload: str, k: int = k, receive: Callable[[str], None] = receive) -> None:
            received[k] += 1
            receive(payload)

        hub._received = counted  # type: ignore[method-assign]
    publisher = hubs[0]
    publisher.publish((RUNS, "warm-up"))
    time.sleep(0.5)
    backends = [int(p) for p in psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{args.database}'").split()]
    mine = [os.getpid()]
    before_self, before_db = cpu_seconds(mine), cpu_seconds(backends)
    start = list(received)
    every = args.every_ms / 1000
    began = time.monotonic()
    for k in range(args.count):
        publisher.publish((RUNS, str(uuid.uuid4())), (EVENTS, "orchestrator.flow-run.Scheduled"))
        pause = began + (k + 1) * every - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - began
    time.sleep(0.5)  # the last notifications delivered
    used_self, used_db = cpu_seconds(mine) - before_self, cpu_seconds(backends) - before_db
    for hub in hubs:
        hub.close()
    psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    notes = [r - s for r, s in zip(received, start)]
    print(f"{args.count} publications in {elapsed:.2f} s ({args.count / elapsed:.0f}/s); CPU per publication: "
          f"this process {used_self / args.count * 1e6:.0f} us, PostgreSQL {used_db / args.count * 1e6:.0f} us, "
          f"total {(used_self + used_db) / args.count * 1e6:.0f} us; notifications per listener {notes}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
