"""The server's side of a worker's claim, in process (issue 22): ``POST /api/flow_runs/{id}/claim``
sent to the app as ASGI (uvicorn's HTTP parsing is not in it; routing, the body's model, the thread
pool hop, the service, its commit, the answer are), on PostgreSQL, one claim after the other. Per
claim: the process's CPU (every thread: the route runs on the thread pool), the statements and
transactions sent (SQLAlchemy's engine events), and with ``--callgrind`` the instructions
(callgrind's client requests around the claims; every thread's, the few idle ones' included;
user space). ``--service`` counts
the service alone (``claims.claim`` in a committed transaction, as the route calls it, without the
route's answer): the difference is the route's framework and answer.

    PYTHONPATH=<tree> python bench/claim_cpu.py [--url postgresql+psycopg://postgres@127.0.0.1/DB] [--runs 200]
    python bench/claim_cpu.py --code /tmp/old --code /tmp/new --callgrind [--rounds 3]   # instructions a claim

Each tree runs in a process of its own (its tree first on ``PYTHONPATH``), old and new alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

TOGGLE_C = """#include <valgrind/callgrind.h>
void block_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void block_end(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""
WARM = 20  # claims before the counted ones: statements prepared, caches filled


def child(url: str, runs: int, service: bool, library: str | None, profile: Path | None, phases: bool) -> None:
    os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-claim-cpu-")
    from route_instructions import request
    from run_path_plans import scheduled_runs
    from sqlalchemy import event

    from orchestrator.server.api.app import create_app
    from orchestrator.server.db.session import make_engine
    from orchestrator.server.services import claims, events
    from orchestrator.settings import Settings

    engine = make_engine(url)
    sessions, ids = scheduled_runs(engine, runs + WARM)
    with sessions() as session:
        from orchestrator.server.db import models as m

        pool = session.get(m.FlowRun, ids[0]).work_pool_name
    app = create_app(Settings(database_url=url, broker_url="memory://"), run_services=False, database_checked=True,
                     engine=engine)
    counts = {"statements": 0, "begins": 0, "commits": 0}
    event.listen(engine, "before_cursor_execute", lambda *a: counts.__setitem__("statements", counts["statements"] + 1))
    event.listen(engine, "begin", lambda *a: counts.__setitem__("begins", counts["begins"] + 1))
    event.listen(engine, "commit", lambda *a: counts.__setitem__("commits", counts["commits"] + 1))
    body = json.dumps({"worker_name": "w", "pool": pool}).encode()
    toggle = ctypes.CDLL(library) if library else None

    async def claim_route(run_id: object) -> None:
        status, answer = await request(app, "POST", f"/api/flow_runs/{run_id}/claim", body)
        assert status == 200, (status, answer)

    async def claim_service(run_id: object) -> None:
        with sessions.begin() as session:
            out = claims.claim(session, run_id, "w", pool=pool)
            events.take_announcement(session)
        assert isinstance(out, claims.Claimed)

    claim = claim_service if service else claim_route
    if phases:
        _dump_at_phases(toggle)

    async def main() -> None:
        for run_id in ids[:WARM]:
            await claim(run_id)
        for key in counts:
            counts[key] = 0
        cpu: list[float] = []
        if toggle is not None:
            toggle.block_start()
        if profile is not None:
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start()
        for run_id in ids[WARM:]:
            before = time.process_time()
            await claim(run_id)
            cpu.append((time.process_time() - before) * 1000)
            if phases:
                toggle.block_end(PHASES[3].encode())
        if toggle is not None and not phases:
            toggle.block_end(b"claims")
        if profile is not None:
            yappi.stop()
            with profile.open("w") as out:
                yappi.get_func_stats().sort("ttot").print_all(out=out, columns={
                    0: ("name", 110), 1: ("ncall", 8), 2: ("tsub", 8), 3: ("ttot", 8), 4: ("tavg", 8)})
        print(json.dumps({"cpu_p50": statistics.median(cpu), **{k: v / runs for k, v in counts.items()}}), flush=True)

    asyncio.run(main())


PHASES = ("arrival -> route body", "route body -> service done", "service done -> committed",
          "committed -> answer sent")


def _dump_at_phases(toggle: ctypes.CDLL) -> None:
    """A callgrind dump at each boundary of a claim's phases (every thread's instructions since the
    last dump: the event loop waits while the thread pool runs the route, so each phase's are its
    own). Bench-only wrappers around the functions the route calls at each boundary."""
    import contextlib
    import functools

    from orchestrator.server.api import context, routes
    from orchestrator.server.services import claims

    plain_transaction = context.AppContext.transaction

    @contextlib.contextmanager
    def transaction(self):  # type: ignore[no-untyped-def]
        toggle.block_end(PHASES[0].encode())
        with plain_transaction(self) as session:
            yield session
        toggle.block_end(PHASES[2].encode())

    plain_claim = claims.claim

    @functools.wraps(plain_claim)
    def claim(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = plain_claim(*args, **kwargs)
        toggle.block_end(PHASES[1].encode())
        return out

    context.AppContext.transaction = transaction  # type: ignore[method-assign]
    claims.claim = claim
    del routes


def phase_instructions(out_dir: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for dump in out_dir.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        name = next((line.removeprefix("desc: Trigger: Client Request: ") for line in text.splitlines()
                     if line.startswith("desc: Trigger:")), "")
        total = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("summary:")), 0)
        found.setdefault(name, []).append(total)
    return found


def instructions(out_dir: Path) -> int:
    for dump in out_dir.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        if "Client Request: claims" in text:
            return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("summary:"))
    raise RuntimeError(f"no counted block in {out_dir}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", action="append", default=[], help="a checkout (its tree goes first on PYTHONPATH)")
    parser.add_argument("--url", default=os.environ.get("ORCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/orch_bench"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--service", action="store_true", help="the service alone, not the route")
    parser.add_argument("--callgrind", action="store_true", help="instructions a claim (valgrind)")
    parser.add_argument("--profile", type=Path, help="yappi's profile (thread CPU, every thread) of the counted "
                        "claims into this file (one tree)")
    parser.add_argument("--phases", action="store_true", help="with --callgrind: the route's instructions a claim "
                        "per phase (arrival, service, commit, answer)")
    parser.add_argument("--keep", type=Path, help="with --callgrind: keep the profiles in this folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.url, args.runs, args.service, args.child or None, args.profile, args.phases)
        return
    codes = args.code or [str(BENCH.parent)]
    work = args.keep or Path(tempfile.mkdtemp(prefix="claim-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    library = work / "toggle.so"
    if args.callgrind:
        (work / "toggle.c").write_text(TOGGLE_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(work / "toggle.c")], check=True)
    python = os.path.realpath(sys.executable)  # pyenv's ``python`` is a shell script: valgrind would count the shell
    extra = ["--service"] if args.service else []
    if args.phases:
        extra.append("--phases")
    if args.profile:
        extra += ["--profile", str(args.profile.resolve())]
    for round_ in range(args.rounds):
        for code in codes:
            env = {**os.environ, "PYTHONPATH": code, "PYTHONHASHSEED": "0"}
            command = [python, __file__, "--url", args.url, "--runs", str(args.runs), *extra]
            load = os.getloadavg()[0]
            if not args.callgrind:
                out = subprocess.run([*command, "--child="], env=env, check=True, capture_output=True, text=True)
                print(f"round {round_ + 1} {code} (load {load:.1f}): {out.stdout.strip()}", flush=True)
                continue
            out_dir = work / f"{round_}-{Path(code).name}"
            out_dir.mkdir()
            out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                  f"--callgrind-out-file={out_dir}/callgrind.out.%p", *command, f"--child={library}"],
                                 env=env, check=True, capture_output=True, text=True)
            if args.phases:
                found = phase_instructions(out_dir)
                print(f"round {round_ + 1} {code} (load {load:.1f}), k instructions a claim (median): " + ", ".join(
                    f"{name} {statistics.median(found[name]) / 1e3:.0f}" for name in PHASES), flush=True)
                continue
            print(f"round {round_ + 1} {code} (load {load:.1f}): {instructions(out_dir) / args.runs / 1e6:.3f} M "
                  f"instructions a claim; {out.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
