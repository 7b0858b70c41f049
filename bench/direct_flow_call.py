"""What a flow called directly costs its program, at two checkouts (old vs new), alternating.

Two figures per checkout, each from its own Python process (``PYTHONPATH=<checkout>``):

1. **no API**: ``ORCH_API_URL`` unset; a trivial sync flow called ``--calls`` times after 200 warm-up
   calls: CPU (``time.process_time``) per call, in µs.
2. **API set**: ``ORCH_API_URL`` pointing at ``orch server start`` (embedded defaults: SQLite and the
   embedded broker, on port ``--port``) started from the newer checkout; the same flow called
   ``--api-calls`` times after 5 warm-up calls: wall time and the program's CPU per call, in ms.
   With recording, each call creates its run, reports its end and ships its two log lines (the
   server's CPU is not counted).

Rounds alternate old, new, old, new...; the spread (min-max over rounds) is printed with the
median. Usage: python bench/direct_flow_call.py OLD NEW [--rounds 4] [--calls 5000] [--api-calls 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import harness  # the one way tests and benchmarks start the system

PROGRAM = '''
import sys, time
from orchestrator import flow

@flow
def f(x: int) -> int:
    return x + 1

calls, warm = int(sys.argv[1]), int(sys.argv[2])
for _ in range(warm):
    f(1)
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(calls):
    f(1)
print((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls)
'''


def one(tree: str, calls: int, warm: int, api_url: str | None) -> tuple[float, float]:
    env = {**harness.clean_env(), "PYTHONPATH": tree}
    if api_url:
        env["ORCH_API_URL"] = api_url
    # cwd: not a checkout (``python -c`` puts the working directory first on ``sys.path``)
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(calls), str(warm)], env=env, capture_output=True,
                          text=True, check=True, timeout=600, cwd=tempfile.gettempdir())
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


def spread(values: list[float], scale: float) -> str:
    return (f"{statistics.median(values) * scale:.1f} "
            f"({min(values) * scale:.1f}-{max(values) * scale:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--api-calls", type=int, default=100)
    parser.add_argument("--port", type=int, default=21400)
    args = parser.parse_args()
    trees = {"old": args.old, "new": args.new}
    plain: dict[str, list[float]] = {name: [] for name in trees}
    api_wall: dict[str, list[float]] = {name: [] for name in trees}
    api_cpu: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as root:
        stack = harness.Stack(Path(root), {"PYTHONPATH": args.new})
        stack.port, stack.api_url = args.port, f"http://127.0.0.1:{args.port}/api"
        try:
            stack.start_server()
            print("load before:", Path("/proc/loadavg").read_text().strip())
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    plain[name].append(one(tree, args.calls, 200, None)[1])
                    wall, cpu = one(tree, args.api_calls, 5, stack.api_url)
                    api_wall[name].append(wall)
                    api_cpu[name].append(cpu)
            print("load after:", Path("/proc/loadavg").read_text().strip())
            print("runs recorded:", stack.get("/flow_runs?limit=1")["total"])
        finally:
            stack.stop()
    print(f"rounds: {args.rounds}; median (min-max)")
    print("| checkout | no API: CPU/call (µs) | API set: wall/call (ms) | API set: program CPU/call (ms) |")
    print("|---|---|---|---|")
    for name in trees:
        print(f"| {name} | {spread(plain[name], 1e6)} | {spread(api_wall[name], 1e3)} | "
              f"{spread(api_cpu[name], 1e3)} |")


if __name__ == "__main__":
    os.environ.pop("ORCH_API_URL", None)
    main()
