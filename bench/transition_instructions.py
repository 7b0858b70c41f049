"""Instructions of a run's transitions in the server's services, old code against new (issue 22):
callgrind counts of the claim (``claims.claim``) and of the RUNNING (with ``infrastructure_id``)
and COMPLETED reports (``flow_runs.set_state``) in process on PostgreSQL, each call a block of its
own, its transaction's ``BEGIN`` included and its commit excluded (as run_timeline.py's
``--statements`` times the services). What bench/transition_cpu.py measures as thread CPU, counted.

    python bench/transition_instructions.py --code /path/old --code /path/new [--rounds 2] [--runs 30] \
        [--url postgresql+psycopg://postgres@127.0.0.1/DB]

Each checkout's process migrates the database if it is empty, adds a pool, a deployment and
``--runs`` + 10 runs (``run_path_plans.scheduled_runs``), walks 10 of them through the path (the
statements built and prepared), then counts the others: user space only (psycopg's round trips'
waits and the kernel's work are not instructions of the process). Prints instructions per call.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_instructions import dumped_block, toggle_library

KINDS = ("claim", "RUNNING", "COMPLETED")
WARM = 10


def child(library: str, url: str, runs: int) -> None:
    from run_path_plans import scheduled_runs

    from orchestrator import schemas
    from orchestrator.server.db.session import make_engine
    from orchestrator.server.services import claims, events, flow_runs
    from orchestrator.states import StateType

    toggle = ctypes.CDLL(library)
    sessions, ids = scheduled_runs(make_engine(url), runs + WARM)
    for at, run_id in enumerate(ids):
        counted = at >= WARM
        with sessions.begin() as session:
            if counted:
                toggle.block_start()
            claims.claim(session, run_id, "w")
            if counted:
                toggle.block_end(b"claim")
            events.take_announcement(session)
        for state, infrastructure_id in ((StateType.RUNNING, "pid-1"), (StateType.COMPLETED, None)):
            with sessions.begin() as session:
                if counted:
                    toggle.block_start()
                flow_runs.set_state(session, run_id, schemas.StateCreate(type=state, worker_name="w"),
                                    infrastructure_id=infrastructure_id)
                if counted:
                    toggle.block_end(state.value.encode())
                events.take_announcement(session)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", action="append", default=[], help="a checkout (its tree goes first on PYTHONPATH)")
    parser.add_argument("--url", default=os.environ.get("ORCH_DATABASE_URL",
                                                        "postgresql+psycopg://postgres@127.0.0.1/orch_bench"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.url, args.runs)
        return
    work = Path(tempfile.mkdtemp(prefix="transition-instructions-"))
    library = toggle_library(work, False)
    assert library is not None
    python = os.path.realpath(sys.executable)
    results: dict[str, dict[str, list[float]]] = {code: {} for code in args.code}
    for round_ in range(args.rounds):
        for index, code in enumerate(args.code):  # alternating: old, new, old, new, ...
            out_dir = work / f"{round_}-{index}"
            out_dir.mkdir()
            env = {**os.environ, "PYTHONPATH": code, "PYTHONHASHSEED": "0"}
            # %n: a file per dump, one per block (each named by its kind)
            subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no",
                            f"--callgrind-out-file={out_dir}/callgrind.out.%p.%n", python, __file__,
                            f"--child={library}", "--url", args.url, "--runs", str(args.runs)],
                           env=env, check=True, capture_output=True)
            for dump in out_dir.glob("callgrind.out.*"):  # a dump per call: the names repeat
                block = dumped_block(dump)
                if block is not None:
                    results[code].setdefault(block[0], []).append(block[1])
    print(f"{'call':12}" + "".join(f"{Path(code).name:>36}" for code in args.code)
          + "   (instructions a call: median, min-max over every call of every round)")
    for kind in KINDS:
        cells = []
        for code in args.code:
            values = results[code].get(kind, [])
            cells.append(f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})" if values else "-")
        print(f"{kind:12}" + "".join(f"{cell:>36}" for cell in cells))


if __name__ == "__main__":
    main()
