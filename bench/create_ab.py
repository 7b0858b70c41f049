"""Sequential creates of two checkouts, alternating: ``orch server start`` of each on its own PostgreSQL
database and Redis db, one client POSTing ``/api/deployments/{id}/runs`` one after the other (issue 22's
one-client row), the other side's processes stopped meanwhile.

    python bench/create_ab.py --code /path/old --code /path/new [--rounds 8] [--sequential 1000]
                              [--warm 3000] [--database orch_bench_ab] [--redis-db 20]

Each side is a server of its checkout (``PYTHONPATH``; events on, a deployment on a pool nobody serves,
its runs neither named Late nor re-published meanwhile: ``create_run_api_events.Bench``), warmed with
``--warm`` creates first: a new database's first few thousand creates are slower (bench/RESULTS.md,
issue 22, "The floors a goal is judged against"). Then ``--rounds`` rounds, each side in turn (the first
side alternating), ``--sequential`` creates each: the rate, and the CPU a create of the server's
process (its event loop and create thread apart) and of PostgreSQL's backends (``/proc``;
steadier than the wall clock on a shared machine). Per side: each round's figures and their medians;
the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))  # this checkout

from compare import measures
from compare.common import others_stopped, tree_pids
from compare.ours import precompile
from create_run_api_events import Bench, cpu_seconds, side_pids


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (``/proc/<pid>/task/*/schedstat``: nanoseconds on the CPU)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except OSError:
            continue  # the thread ended meanwhile
    return out


def sequential(side: Bench, count: int) -> tuple[float, float, float, float, float]:
    """``count`` sequential creates: runs/s, and ms of CPU a create of the server's process tree, of
    its event loop (the main thread), of its busiest other thread (the create's: ``fast-route``; the
    threads carry the process's name, so it is told by its CPU) and of PostgreSQL's backends."""
    pids = side_pids(side)
    server = side.server.pid  # type: ignore[union-attr]
    tree = set(tree_pids(server))
    backends = [pid for pid in pids if pid not in tree]
    before, threads_before = cpu_seconds(pids), thread_cpu(server)
    began = time.perf_counter()
    for _ in range(count):
        side.create_run("idle", strict=True)
    rate = count / (time.perf_counter() - began)
    after, threads_after = cpu_seconds(pids), thread_cpu(server)
    used = {pid: value - before.get(pid, 0.0) for pid, value in after.items()}
    pg = sum(used.get(pid, 0.0) for pid in backends)
    threads = {tid: value - threads_before.get(tid, 0.0) for tid, value in threads_after.items()}
    loop = threads.pop(server, 0.0)
    busiest = max(threads.values(), default=0.0)
    return (rate, (sum(used.values()) - pg) / count * 1000, loop / count * 1000, busiest / count * 1000,
            pg / count * 1000)


def line(rate: float, server: float, loop: float, create: float, pg: float) -> str:
    return (f"{rate:6.0f} /s, CPU a create: server {server:.3f} ms (loop {loop:.3f}, create thread {create:.3f}), "
            f"PostgreSQL {pg:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", required=True, help="a checkout (give two)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=3000)
    parser.add_argument("--database", default="orch_bench_ab", help="PostgreSQL databases <name>_0, _1 (recreated)")
    parser.add_argument("--redis-db", type=int, default=20, help="Redis dbs this and the next (flushed)")
    args = parser.parse_args()
    sides: list[Bench] = []
    for i, code in enumerate(args.code):
        precompile(Path(code))
        side = Bench("postgres", True, database=f"{args.database}_{i}", redis_db=args.redis_db + i)
        side.env["PYTHONPATH"] = str(Path(code).resolve())
        side.label = f"{i}:{code}"
        sides.append(side)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    figures: dict[str, list[tuple[float, float, float, float, float]]] = {side.label: [] for side in sides}
    try:
        for side in sides:
            side.setup()
        for side in sides:
            with others_stopped(sides, side):
                for _ in range(args.warm):
                    side.create_run("idle", strict=True)
        for round_ in range(args.rounds):
            for side in measures.rotated(sides, round_):
                with others_stopped(sides, side, settle=0.5):
                    figures[side.label].append(sequential(side, args.sequential))
                print(f"round {round_ + 1} {side.label}: {line(*figures[side.label][-1])}; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for side in sides:
            side.stop()
    for label, rows in figures.items():
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        print(f"{label}: medians {line(*medians)} ({len(rows)} rounds)")
    if len(sides) == 2:
        a, b = (figures[side.label] for side in sides)
        faster = sum(y[0] > x[0] for x, y in zip(a, b, strict=True))
        print(f"side 1 faster than side 0 in {faster} of {len(a)} rounds (rounds paired in order)")
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
