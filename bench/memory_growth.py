"""Does the server's RSS grow without bound while it works? (issue 22)

    python bench/memory_growth.py [--code PATH] [--steps 15] [--runs 200] [--events 200] [--settle 3]
                                  [--database orch_h2_growth] [--redis-db 24] [--profile DIR]

A real ``orch server start`` + ``orch worker start --limit 8`` on PostgreSQL + Redis (as bench/compare.py
starts them, ``compare.ours.OursSide``), whose no-op flow calls one task (a task run per flow run). Each
step: ``--runs`` runs created at once and waited for, ``--events`` events POSTed in batches of 50 (each
about a resource of its own: nothing repeats), a page of the runs' list and one run read back; then
``--settle`` idle seconds and the server's RSS / PSS / private / anonymous (``/proc/PID/smaps_rollup``).
A table of the figures after each step, and how much each third of the steps added.

``--profile DIR``: the server traces its allocations (bench/memory_profile/sitecustomize.py) and at each
step writes DIR/server.<pid>.txt (live allocations by package), .since (what was allocated since the
previous step and lives on, by line, largest first) and .types (the collector's objects by type, and how
full each LRU cache is: SQLAlchemy's compiled statements, functools'), each kept as DIR/step-<n>.<kind> (step 0: once set up, before any run).
Tracing costs memory and time: the RSS figures of such a run are not the ones to compare.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import itertools

from compare import ours as ours_side
from compare.ours import OursSide, precompile
from memory_floor import profile_env
from worker_memory import rollup

from tests.harness import wait_until

# The no-op flow with one task: every run also writes a task run (its report, its events).
FLOWS_PY = '''"""bench/memory_growth.py's flows."""
from orchestrator import flow, task


@task
def step(n: int) -> int:
    return n + 1


@flow
def noop() -> None:
    step(1)


@flow
def sleeper(seconds: float = 600.0) -> None:
    pass
'''


def events(count: int, step: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return [{"id": str(uuid.uuid4()), "occurred": now, "event": "bench.growth.happened", "payload": {"i": i},
             "resource": {"orchestrator.resource.id": f"bench.growth.{step}.{i}"},
             "related": [{"orchestrator.resource.id": "orchestrator.tag.bench", "orchestrator.resource.role": "tag"}]}
            for i in range(count)]


def work(side: OursSide, step: int, runs: int, count: int) -> float:
    """One step's load; the batch's runs per minute."""
    # Not measures.batch: it counts final runs through the list's total, which stops at 1000.
    sent = time.time()
    ids = [side.create_run("noop") for _ in range(runs)]
    infos = [side.wait_final(run_id, 600, interval=0.5) for run_id in ids]
    if failed := sum(info["state"] != "COMPLETED" for info in infos):
        raise RuntimeError(f"step {step}: {failed} runs did not complete")
    for start in range(0, count, 50):
        side.api.request("POST", "/events", body=events(min(50, count - start), step * 100_000 + start))
    page = side.api.request("GET", "/flow_runs?limit=20")
    items = page if isinstance(page, list) else next(iter(v for v in page.values() if isinstance(v, list)), [])
    if items:
        side.api.request("GET", f"/flow_runs/{items[0]['id']}")
    return runs / (max(info["end"] for info in infos) - sent) * 60


def dump_profile(folder: Path, pid: int, step: int) -> None:
    """Have the server write its profile (bench/memory_profile); keep this step's ``.since`` and ``.types``."""
    dumped = folder / f"server.{pid}.modules"  # the dump's last file
    before = dumped.stat().st_mtime_ns if dumped.exists() else 0
    os.kill(pid, signal.SIGUSR2)
    wait_until("the server's profile", lambda: dumped.exists() and dumped.stat().st_mtime_ns != before, 120,
               interval=0.2)
    for kind in ("since", "types", "txt"):
        if (folder / f"server.{pid}.{kind}").exists():
            shutil.copy(folder / f"server.{pid}.{kind}", folder / f"step-{step}.{kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=BENCH.parent, help="the checkout to measure")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--runs", type=int, default=200, help="runs per step")
    parser.add_argument("--events", type=int, default=200, help="events per step")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--database", default="orch_h2_growth")
    parser.add_argument("--redis-db", type=int, default=24)
    parser.add_argument("--profile", type=Path, help="write the server's allocation profile at each step here")
    args = parser.parse_args()
    code = args.code.resolve()
    precompile(code)
    ours_side.FLOWS_PY = FLOWS_PY
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    side.env["PYTHONPATH"] = str(code)
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
        side.env.update(profile_env(side.env, args.profile, "server"))
    print(f"load average {os.getloadavg()[0]:.2f}; {code}", flush=True)
    rows = []
    try:
        side.setup()
        assert side.server is not None
        pid = side.server.pid
        time.sleep(args.settle)
        if args.profile is not None:
            dump_profile(args.profile, pid, 0)
        rows.append((0, rollup(pid), float("nan")))
        for step in range(1, args.steps + 1):
            rate = work(side, step, args.runs, args.events)
            time.sleep(args.settle)
            if args.profile is not None:
                dump_profile(args.profile, pid, step)
            rows.append((step * args.runs, rollup(pid), rate))
            memory = rows[-1][1]
            print(f"  {step * args.runs:6d} runs, {step * args.events:6d} events: RSS {memory['rss']:6.1f}  "
                  f"PSS {memory['pss']:6.1f}  private {memory['private']:6.1f}  anonymous {memory['anonymous']:6.1f} MB"
                  f"  ({rate:.0f} runs/min, load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        side.stop()
    thirds = [rows[0], rows[len(rows) // 3], rows[2 * len(rows) // 3], rows[-1]]
    print("RSS added: " + ", ".join(f"runs {a[0]}-{b[0]} {b[1]['rss'] - a[1]['rss']:+.2f} MB"
                                    for a, b in itertools.pairwise(thirds)))
    print(json.dumps([{"runs": r, **m} for r, m, _ in rows]))


if __name__ == "__main__":
    main()
