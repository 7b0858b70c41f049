"""Idle memory of the worker's process tree (issue 22), per process: RSS, PSS and private memory.

For each checkout (``--code PATH``, repeatable; default this one), alternating ``--rounds`` times:
``orch server start`` + ``orch worker start --limit 8`` of that checkout on PostgreSQL + Redis
(``tests.harness.Stack``, as bench/compare.py starts them), ``--runs`` no-op runs one at a time and
a batch of ``--batch`` created at once (the load bench/compare.py puts on it), ``--settle`` idle
seconds, then ``/proc/PID/smaps_rollup`` of every process of the worker's tree:

* RSS: what bench/compare.py sums over the tree (a page shared by the worker and its fork server
  counts in both);
* PSS: a page shared by N processes counts 1/N in each, so the tree's PSS sum is what the tree
  costs the machine;
* private: pages of this process alone (``Private_Clean + Private_Dirty``).

Database ``h4_worker_memory`` and Redis db 7 unless ``--database`` / ``--redis-db``.

Usage: python bench/worker_memory.py [--code /path/to/other/checkout]... [--rounds 2] [--runs 10] [--batch 20]
       [--no-prewarm]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import measures
from compare.common import tree_pids
from compare.ours import OursSide, precompile


def rollup(pid: int) -> dict[str, float]:
    """RSS, PSS and private memory of ``pid`` in MB (``/proc/PID/smaps_rollup``)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            fields[name] = int(rest.split()[0])
    return {"rss": fields["Rss"] / 1024, "pss": fields["Pss"] / 1024,
            "private": (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024,
            "anonymous": fields.get("Anonymous", 0) / 1024}


def command_of(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return " ".join(os.path.basename(a.decode()) if i == 0 else a.decode() for i, a in enumerate(argv) if a)[:80]


def tree_memory(pid: int) -> list[dict[str, Any]]:
    out = []
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, KeyError):
            out.append({"pid": p, "command": command_of(p), **rollup(p)})
    return out


def one_round(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    side.env["PYTHONPATH"] = str(code)
    if args.no_prewarm:  # no fork server: every run a fresh interpreter
        side.env["ORCH_WORKER_PREWARM"] = "false"
    load = [os.getloadavg()[0]]
    try:
        side.setup()
        measures.create_to_final([side], args.runs)
        if args.batch:
            measures.batch(side, args.batch, timeout=600)
        load.append(os.getloadavg()[0])
        time.sleep(args.settle)
        assert side.worker is not None
        processes = tree_memory(side.worker.pid)
    finally:
        side.stop()
    return {"load": load, "processes": processes,
            **{key: sum(p[key] for p in processes) for key in ("rss", "pss", "private")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, action="append", help="a checkout to measure (repeatable)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--no-prewarm", action="store_true", help="ORCH_WORKER_PREWARM=false: no fork server")
    parser.add_argument("--database", default="h4_worker_memory")
    parser.add_argument("--redis-db", type=int, default=7)
    args = parser.parse_args()
    codes = [c.resolve() for c in args.code or [Path(__file__).resolve().parents[1]]]
    for code in codes:  # byte-compiled, as an installed package is: an uncompiled tree costs +0.5 MB
        precompile(code)
    results: dict[Path, list[dict[str, Any]]] = {c: [] for c in codes}
    for i in range(args.rounds):
        for code in codes[i % len(codes):] + codes[:i % len(codes)]:
            result = one_round(code, args)
            results[code].append(result)
            print(f"round {i + 1} {code}: load {', '.join(f'{v:.1f}' for v in result['load'])}", flush=True)
            for p in result["processes"]:
                print(f"  {p['pid']:>7} RSS {p['rss']:6.1f}  PSS {p['pss']:6.1f}  private {p['private']:6.1f}  "
                      f"anon {p['anonymous']:6.1f} MB  {p['command']}", flush=True)
            print(f"  tree: RSS {result['rss']:.1f}  PSS {result['pss']:.1f}  private {result['private']:.1f} MB",
                  flush=True)
    for code, rounds in results.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in ("rss", "pss", "private")}
        alone = statistics.median(r["processes"][0]["rss"] for r in rounds)
        print(f"{code}: worker tree idle, medians of {len(rounds)} rounds: RSS {med['rss']:.1f} MB (worker process "
              f"alone {alone:.1f} MB), PSS {med['pss']:.1f} MB, private {med['private']:.1f} MB")


if __name__ == "__main__":
    main()
