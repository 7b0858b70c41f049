"""The run path on the worker side (issue 22): our stack alone, on PostgreSQL + Redis, for one or
more checkouts, alternating.

For each checkout (``--code PATH``, repeatable; default this one): ``orch server start`` +
``orch worker start --limit 8`` of that checkout (PYTHONPATH), then

* create -> RUNNING / COMPLETED: one no-op run at a time, POST sent -> the server's start_time /
  end_time (as bench/compare.py measures it);
* a batch of ``--batch`` no-op runs created at once: makespan, runs per minute, and the CPU time it
  cost (user + system, from /proc: the worker's and the server's process trees, reaped children
  included, and the PostgreSQL backends connected to the bench database) divided by the runs;
* idle RSS of the worker's process tree (sum of RSS, as bench/compare.py, and the sum of PSS, which
  counts a page shared by N processes as 1/N in each).

The checkouts alternate ``--rounds`` times (a load spike hits them alike); the load average is
printed with each round. Database ``orch_bench_h4`` and Redis db 7 unless ``--database`` / ``--redis-db``.

Usage: python bench/worker_path.py [--code /path/to/other/checkout]... [--rounds 2] [--runs 20] [--batch 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import measures
from compare.common import pct, tree_pids, tree_pss_mb, tree_rss_mb
from compare.ours import PACKAGES, OursSide

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int], *, reaped: bool = True) -> float:
    """User + system time of ``pids``, with that of the children each has reaped (``reaped``)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15 if reaped else 13])  # utime, stime, cutime, cstime
    return total / TICKS


def parts_of(side: OursSide) -> dict[str, float]:
    """CPU seconds so far of the worker process itself, the flow-run processes (whoever started
    them: the worker, or its fork server), the server's process tree and the bench database's
    PostgreSQL backends."""
    assert side.worker is not None and side.server is not None
    worker_own = cpu_seconds([side.worker.pid], reaped=False)
    return {"worker process": worker_own,
            "flow-run processes": cpu_seconds(tree_pids(side.worker.pid)) - worker_own,
            "server": cpu_seconds(tree_pids(side.server.pid)), "postgres": cpu_seconds(backend_pids(side))}


def backend_pids(side: OursSide) -> list[int]:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
                          f"select pid from pg_stat_activity where datname = '{side.database}'"],
                         capture_output=True, text=True, check=True).stdout
    return [int(line) for line in out.split()]


def one_round(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    side.env["PYTHONPATH"] = str(code)
    out: dict[str, Any] = {"load": [os.getloadavg()[0]]}
    try:
        side.setup()
        latency = measures.create_to_final([side], args.runs)[side.label]
        out["running"] = latency["running"]
        out["completed"] = latency["completed"]
        out["load"].append(os.getloadavg()[0])
        assert side.server is not None and side.worker is not None
        before = parts_of(side)
        recorders = []
        if args.profile:  # py-spy on the worker (and the flow-run processes it starts) and the server
            from compare.profile_ours import py_spy

            for name, pid, extra in (("worker", side.worker.pid, ["--subprocesses"]), ("server", side.server.pid, [])):
                recorders.append((name, subprocess.Popen(
                    [py_spy(None), "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                     "--output", str(args.profile / f"{name}.txt"), "--nonblocking", *extra],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            time.sleep(2.0)  # py-spy attaches
        batch = measures.batch(side, args.batch, timeout=600)
        for _name, recorder in recorders:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
        time.sleep(1.0)  # the last processes reaped
        spent = {name: (value - before[name]) / args.batch * 1000 for name, value in parts_of(side).items()}
        out["cpu_per_run_ms"] = sum(spent.values())
        out["cpu_parts_ms"] = spent
        out["per_minute"] = batch["per_minute"]
        out["failed"] = batch["failed"]
        out["load"].append(os.getloadavg()[0])
        time.sleep(5.0)
        out["rss"] = tree_rss_mb(side.worker.pid)
        out["rss_alone"] = tree_rss_mb(side.worker.pid, children=False)
        out["pss"] = tree_pss_mb(side.worker.pid)
        out["tree"] = len(tree_pids(side.worker.pid))
    finally:
        side.stop()
    return out


def summary(code: Path, rounds: list[dict[str, Any]]) -> str:
    running = [v for r in rounds for v in r["running"]]
    completed = [v for r in rounds for v in r["completed"]]
    med = lambda key: statistics.median(r[key] for r in rounds)
    loads = [v for r in rounds for v in r["load"]]

    parts = ", ".join(f"{name} {statistics.median(r['cpu_parts_ms'][name] for r in rounds):.0f}"
                      for name in rounds[0]["cpu_parts_ms"])

    def each(key: str) -> str:
        return ", ".join(f"{r[key]:.0f}" for r in rounds)

    return (f"{code}: create->RUNNING p50 {pct(running, 0.5) * 1000:.0f} ms p95 {pct(running, 0.95) * 1000:.0f} ms; "
            f"create->COMPLETED p50 {pct(completed, 0.5) * 1000:.0f} ms p95 {pct(completed, 0.95) * 1000:.0f} ms; "
            f"batch {med('per_minute'):.0f} runs/min (rounds: {each('per_minute')}), "
            f"failed {sum(r['failed'] for r in rounds):.0f}; CPU per run {med('cpu_per_run_ms'):.0f} ms "
            f"(rounds: {each('cpu_per_run_ms')}; {parts}); idle worker tree RSS "
            f"{med('rss'):.0f} MB (worker alone {med('rss_alone'):.0f} MB), PSS {med('pss'):.0f} MB, "
            f"{med('tree'):.0f} processes; load {min(loads):.1f}-{max(loads):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", type=Path, help="checkout whose code runs (repeatable)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--database", default="orch_bench_h4")
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--profile", type=Path, help="py-spy the batch into this folder (worker.txt, server.txt)")
    args = parser.parse_args()
    codes = args.code or [Path(__file__).resolve().parents[1]]
    for code in codes:  # byte-compiled, as an installed package is (bench/compare/ours.py)
        subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(code / p) for p in PACKAGES)], check=True)
    results: dict[Path, list[dict[str, Any]]] = {c: [] for c in codes}
    for i in range(args.rounds):
        for code in codes:
            result = one_round(code, args)
            results[code].append(result)
            print(json.dumps({"code": str(code), **result}), file=sys.stderr, flush=True)  # the raw figures
            print(f"round {i + 1} {code}: {summary(code, [result])}", flush=True)
    print("\nall rounds:")
    for code, rounds in results.items():
        print(summary(code, rounds))


if __name__ == "__main__":
    main()
