"""Our side of bench/compare.py at two commits, one after the other on this machine: does a change
keep every figure within 10 % (issue 15's rule for a restructuring)?

Each commit is checked out in a worktree of its own (``git worktree add``); the figures are taken by
that checkout's own ``bench/compare`` code in a subprocess (its ``OursSide``: ``orch server start`` +
``orch worker start --limit 8`` on PostgreSQL + Redis and on the embedded defaults), so each side runs
exactly its commit. The two commits alternate ``--rounds`` times and each figure keeps its median
over the rounds: a load spike from other work on the machine hits both sides alike.

Usage: python bench/before_after.py BEFORE [AFTER] [--rounds 3] [--write]
(AFTER defaults to HEAD; --write adds the table to bench/RESULTS.md under "Before / after".)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Runs inside one checkout's bench/ folder, with that checkout first on sys.path.
DRIVER = r'''
import json, os, shutil, sys, tempfile
from pathlib import Path
sys.path[:0] = [os.getcwd(), str(Path.cwd().parent)]
from compare import measures
from compare.common import others_stopped
from compare.ours import LABELS, OursSide, base_env, precompile

precompile()
out = {}
home = Path(tempfile.mkdtemp(prefix="orch-ba-import-"))
out["import"] = measures.import_times(
    {"ours": ([sys.executable, "-c", "from orchestrator import flow"], base_env(home, "http://127.0.0.1:9/api"))}, 5)["ours"]
shutil.rmtree(home, ignore_errors=True)
out["cold"] = measures.cold_starts({LABELS["postgres"]: lambda: OursSide("postgres"),
                                    LABELS["embedded"]: lambda: OursSide("embedded")}, 2)
sides = [OursSide("postgres"), OursSide("embedded")]
try:
    for side in sides:
        side.setup()
    out["latency"] = measures.create_to_final(sides, 10)
    out["batch"] = {side.label: measures.batch(side, 50, timeout=600) for side in sides}
    out["cancel"] = measures.cancel_running(sides, 3)
    out["create_api"] = {}
    for side in sides:
        with others_stopped(sides, side):
            out["create_api"][side.label], ids = measures.create_api(side, 100, 20, 10)
        measures.cleanup_runs(side, ids)
finally:
    for side in sides:
        side.stop()
print("RESULT " + json.dumps(out, default=str))
'''


def figures(raw: dict[str, Any]) -> dict[str, float]:
    """The figures of one round, by name (times in ms, rates per s)."""
    def median(values: list[float]) -> float:
        return statistics.median(values)

    out = {"SDK import, ms": raw["import"] * 1000}
    for label, cold in raw["cold"].items():
        out[f"cold start, empty database, {label}, ms"] = median(cold["empty"]) * 1000
    for label, lat in raw["latency"].items():
        out[f"create → RUNNING p50, {label}, ms"] = median(lat["running"]) * 1000
        out[f"create → COMPLETED p50, {label}, ms"] = median(lat["completed"]) * 1000
    for label, batch in raw["batch"].items():
        out[f"50 no-op runs at limit 8, {label}, runs/min"] = batch["per_minute"]
    for label, cancel in raw["cancel"].items():
        out[f"cancel → CANCELLED, {label}, ms"] = median(cancel["cancelled"]) * 1000
    for label, api in raw["create_api"].items():
        out[f"create-run API sequential, {label}, runs/s"] = api["sequential_per_s"]
        out[f"create-run API 20 clients, {label}, runs/s"] = api["concurrent_per_s"]
    return out


def one_round(checkout: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=checkout / "bench", capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "PYTHONPATH": str(checkout)})
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{checkout}: no result\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return figures(json.loads(line.removeprefix("RESULT ")))


def worktree(commit: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"orch-ba-{commit[:8]}-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True,
                   capture_output=True)
    return path


def table(before: str, after: str, rounds: list[tuple[dict[str, float], dict[str, float]]]) -> str:
    lower_is_better = ("ms",)
    lines = [f"| figure | before ({before}) | after ({after}) | change | within 10 % |", "|---|---|---|---|---|"]
    for name in rounds[0][0]:
        b = statistics.median(r[0][name] for r in rounds)
        a = statistics.median(r[1][name] for r in rounds)
        worse = (a - b) / b if name.endswith(lower_is_better) else (b - a) / b
        lines.append(f"| {name} | {b:.1f} | {a:.1f} | {'+' if a >= b else ''}{(a - b) / b * 100:.0f} % | "
                     f"{'yes' if worse <= 0.10 else '**no**'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    names = [subprocess.run(["git", "rev-parse", "--short", c], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip() for c in (args.before, args.after)]
    trees = [worktree(c) for c in (args.before, args.after)]
    load = [os.getloadavg()[0]]
    rounds = []
    try:
        for i in range(args.rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which side goes first
            got: dict[int, dict[str, float]] = {}
            for side in order:
                print(f"round {i + 1}: {names[side]} (load {os.getloadavg()[0]:.1f})", flush=True)
                got[side] = one_round(trees[side])
                load.append(os.getloadavg()[0])
            rounds.append((got[0], got[1]))
    finally:
        for tree in trees:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    text = "\n".join([
        f"- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; {os.cpu_count()} cores; load "
        f"average {min(load):.1f}–{max(load):.1f} during the run",
        f"- Command: `python bench/before_after.py {args.before} {args.after} --rounds {args.rounds}` (medians of the "
        "rounds; the two commits alternate; each side runs its own bench/compare code)",
        "", table(*names, rounds)])
    print(text)
    if args.write:
        results = REPO / "bench" / "RESULTS.md"
        results.write_text(results.read_text().rstrip() + f"\n\n## Before / after: {names[0]} → {names[1]}\n\n"
                           + text + "\n")


if __name__ == "__main__":
    main()
