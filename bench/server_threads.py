"""The server's CPU per run and idle, split by thread (issue 22, "close to the floor"): our stack
alone (``orch server start`` + ``orch worker start --limit 8``, PostgreSQL + Redis), one or more
checkouts alternating.

For each checkout (``--code PATH``, repeatable; default this one), ``--pairs`` times:

* ``--runs`` no-op runs back to back (create, then wait for its final state; as bench/run_floor.py):
  the server's CPU per run, by thread;
* then ``--idle`` seconds with nothing asked of it (after ``--settle`` seconds, 3 by default): the server's CPU per
  second, by thread, and how many times each thread was scheduled (voluntary context switches:
  its wake-ups).

Per thread from ``/proc/<pid>/task/<tid>/schedstat`` (on-CPU nanoseconds) and ``status``
(``voluntary_ctxt_switches``); threads are named by a ``sitecustomize`` put first on the server's
``PYTHONPATH`` that notes each Python thread's native id and name as it starts, and its CPU
(``time.thread_time_ns``) as it ends, so a thread that ended inside a window (anyio's idle workers
after 10 s) still counts. ``loop`` is the main thread (uvicorn's event loop). Nothing in the product is changed
to measure it.

Usage: python bench/server_threads.py [--code PATH]... [--pairs 3] [--runs 60] [--idle 10] [--settle 3]
       [--database orch_bench_threads] [--redis-db 15] [--port-base N]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import compare.common
from compare.ours import PACKAGES, OursSide

import tests.harness

SITECUSTOMIZE = r'''
import os, threading, time

_OUT = os.environ.get("ORCH_BENCH_THREADS")
if _OUT:
    _inner = threading.Thread._bootstrap_inner

    def _bootstrap_inner(self):
        with open(f"{_OUT}.{os.getpid()}", "a") as f:
            f.write(f"start {threading.get_native_id()} {self.name}\n")
        try:
            _inner(self)
        finally:
            with open(f"{_OUT}.{os.getpid()}", "a") as f:
                f.write(f"end {threading.get_native_id()} {time.thread_time_ns()} {self.name}\n")

    threading.Thread._bootstrap_inner = _bootstrap_inner
'''

def group(name: str) -> str:
    """A thread's kind: its name without the number of its instance."""
    if name.startswith("AnyIO worker thread"):
        return "anyio"
    return re.sub(r"[-_ ]?\d+$", "", re.sub(r" \(.*\)$", "", name))


class Threads:
    """The server process's threads: CPU nanoseconds and wake-ups per live thread, and the ended ones."""

    def __init__(self, pid: int, notes: Path) -> None:
        self.pid, self.notes = pid, notes

    def names(self) -> tuple[dict[int, str], dict[int, tuple[int, str]]]:
        names: dict[int, str] = {self.pid: "loop"}
        ended: dict[int, tuple[int, str]] = {}
        path = Path(f"{self.notes}.{self.pid}")
        for line in path.read_text().splitlines() if path.exists() else ():
            kind, tid, rest = line.split(" ", 2)
            if kind == "start":
                names[int(tid)] = rest
                ended.pop(int(tid), None)
            else:
                cpu, name = rest.split(" ", 1)
                ended[int(tid)] = (int(cpu), name)
        return names, ended

    def snapshot(self) -> dict[str, Any]:
        live: dict[int, tuple[int, int]] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                cpu = int((task / "schedstat").read_text().split()[0])
                status = (task / "status").read_text()
            except (OSError, ValueError):
                continue
            wakes = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            live[int(task.name)] = (cpu, wakes)
        names, ended = self.names()
        return {"live": live, "names": names, "ended": ended}


def window(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, float], dict[str, int], float]:
    """CPU ns and wake-ups by thread kind between snapshots ``a`` and ``b``, and their sum."""
    cpu: dict[str, float] = collections.Counter()
    wakes: dict[str, int] = collections.Counter()
    for tid, (ns, woke) in b["live"].items():
        before, woke_before = a["live"].get(tid, (0, 0))
        kind = group(b["names"].get(tid, "?"))
        cpu[kind] += ns - before
        wakes[kind] += woke - woke_before
    for tid, (ns, name) in b["ended"].items():
        if tid in a["live"] and tid not in b["live"] or tid not in a["live"] and tid not in a["ended"]:
            cpu[group(name)] += ns - a["live"].get(tid, (0, 0))[0]
    return dict(cpu), dict(wakes), sum(cpu.values())


def one(code: Path, args: argparse.Namespace, port: int, hooks: Path) -> dict[str, Any]:
    tests.harness.free_port = compare.common.free_port = lambda: port  # the port block this bench may use
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    notes = hooks / f"threads-{port}"
    side.env["PYTHONPATH"] = f"{hooks}{os.pathsep}{code}"
    side.env["ORCH_BENCH_THREADS"] = str(notes)
    out: dict[str, Any] = {"code": str(code), "load": [os.getloadavg()[0]]}
    try:
        side.setup()
        assert side.server is not None
        threads = Threads(side.server.pid, notes)
        for _ in range(5):  # warm: every route and statement once
            side.wait_final(side.create_run("noop"), 60)
        a = threads.snapshot()
        for _ in range(args.runs):
            info = side.wait_final(side.create_run("noop"), 60)
            if info["state"] != "COMPLETED":
                raise RuntimeError(f"run ended {info['state']}")
        b = threads.snapshot()
        cpu, wakes, total = window(a, b)
        out["run_ms"] = {k: v / args.runs / 1e6 for k, v in cpu.items()}
        out["run_total_ms"] = total / args.runs / 1e6
        time.sleep(args.settle)
        c = threads.snapshot()
        time.sleep(args.idle)
        d = threads.snapshot()
        cpu, wakes, total = window(c, d)
        out["idle_ms_s"] = {k: v / args.idle / 1e6 for k, v in cpu.items()}
        out["idle_wakes_s"] = {k: v / args.idle for k, v in wakes.items()}
        out["idle_total_ms_s"] = total / args.idle / 1e6
        out["load"].append(os.getloadavg()[0])
    finally:
        side.stop()
    return out


def table(rounds: list[dict[str, Any]], key: str, unit: str) -> str:
    kinds = sorted({k for r in rounds for k in r[key]}, key=lambda k: -statistics.median(r[key].get(k, 0) for r in rounds))
    return "; ".join(f"{k} {statistics.median(r[key].get(k, 0) for r in rounds):.2f}{unit}" for k in kinds
                     if statistics.median(r[key].get(k, 0) for r in rounds) >= 0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", type=Path, help="checkout whose code runs (repeatable)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the runs before the idle window")
    parser.add_argument("--database", default="orch_bench_threads")
    parser.add_argument("--redis-db", type=int, default=15)
    parser.add_argument("--port-base", type=int, default=0, help="servers listen on this port + 0, 1, ... (default: any free)")
    args = parser.parse_args()
    codes = args.code or [BENCH.parent]
    for code in codes:
        subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(code / p) for p in PACKAGES)], check=True)
    hooks = Path(tempfile.mkdtemp(prefix="orch-threads-"))
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    ports = itertools.count(args.port_base) if args.port_base else iter(tests.harness.free_port, None)
    results: dict[str, list[dict[str, Any]]] = {str(c): [] for c in codes}
    for i in range(args.pairs):
        for code in codes if i % 2 == 0 else codes[::-1]:
            result = one(code, args, next(ports), hooks)
            results[str(code)].append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
            print(f"pair {i + 1} {code}: a run {result['run_total_ms']:.2f} ms ({table([result], 'run_ms', '')}); "
                  f"idle {result['idle_total_ms_s']:.2f} ms/s ({table([result], 'idle_ms_s', '')}); "
                  f"idle wake-ups/s ({table([result], 'idle_wakes_s', '')}); load "
                  f"{result['load'][0]:.1f}-{result['load'][-1]:.1f}", flush=True)
    print("\nmedians:")
    for code, rounds in results.items():
        print(f"{code}: server CPU a run {statistics.median(r['run_total_ms'] for r in rounds):.2f} ms "
              f"(rounds {', '.join(format(r['run_total_ms'], '.2f') for r in rounds)}): {table(rounds, 'run_ms', '')}")
        print(f"    idle {statistics.median(r['idle_total_ms_s'] for r in rounds):.2f} ms/s "
              f"(rounds {', '.join(format(r['idle_total_ms_s'], '.2f') for r in rounds)}): {table(rounds, 'idle_ms_s', '')}; "
              f"wake-ups/s: {table(rounds, 'idle_wakes_s', '')}")


if __name__ == "__main__":
    main()
