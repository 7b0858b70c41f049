"""Instructions the event loop's thread spends on each request of a run's path to COMPLETED (issue 22),
old code against new: callgrind counts of ``await app(scope, receive, send)`` for a create, the
worker's claim, the RUNNING report (with ``infrastructure_id``, as the flow-run process sends it)
and the COMPLETED report, each kind a block of ``--requests`` requests on as many runs.

    python bench/run_path_instructions.py --code /path/old --code /path/new [--rounds 2] [--requests 30]
    python bench/run_path_instructions.py --code /path/new --wall    # no valgrind: the process's CPU

Each checkout's process builds the app (``create_app``, services off, a SQLite home of its own),
runs its lifespan, makes a pool and a deployment, walks a few runs through the path (each route's
first use builds it), then counts the blocks: the calling thread only (the endpoints' threads are
not counted), user space only, as ``route_instructions.py`` and ``layer_instructions.py`` count.
``--wall``: the process's CPU (every thread: the loop's, the endpoints', SQLite's work) a request,
the best of 5 blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_instructions import measure, request, toggle_library

KINDS = ("create", "claim", "running", "completed")


def child(library: str | None, count: int, blocks: int) -> None:
    os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-run-path-instructions-")
    from orchestrator.server.api.app import create_app
    from orchestrator.settings import Settings

    toggle = ctypes.CDLL(library) if library else None

    async def main() -> None:
        app = create_app(Settings(), run_services=False)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        await request(app, "POST", "/api/work_pools", json.dumps({"name": "idle", "type": "process"}).encode(), app)
        _, answer = await request(app, "POST", "/api/deployments", json.dumps({
            "flow_name": "noop", "name": "idle", "entrypoint": "flows.py:noop", "work_pool_name": "idle"}).encode(), app)
        deployment = json.loads(answer)["id"]
        runs: list[str] = []

        def steps(kind: str) -> tuple[str, str, bytes, int]:
            run = runs[-1] if kind != "create" else ""
            return {
                "create": ("POST", f"/api/deployments/{deployment}/runs", b"{}", 201),
                "claim": ("POST", f"/api/flow_runs/{run}/claim", b'{"worker_name": "w1", "pool": "idle"}', 200),
                "running": ("POST", f"/api/flow_runs/{run}/state?infrastructure_id=pid-1",
                            b'{"type": "RUNNING", "flow_version": "v1"}', 201),
                "completed": ("POST", f"/api/flow_runs/{run}/state", b'{"type": "COMPLETED"}', 201),
            }[kind]

        async def walk(kind: str, at: int) -> None:
            method, path, body, expected = steps(kind)
            if kind != "create":
                path = path.replace(runs[-1], runs[at])
            status, answer = await request(app, method, path, body, app)
            assert status == expected, (kind, status, answer)
            if kind == "create":
                runs.append(json.loads(answer)["id"])

        for _ in range(3):  # every route built and used once
            for kind in KINDS:
                await walk(kind, -1)
        rounds = 1 if toggle is not None else blocks
        best: dict[str, float] = {}
        for _ in range(rounds):
            first = len(runs)
            for kind in KINDS:
                if toggle is not None:
                    toggle.block_start()
                start = time.process_time()
                for at in range(first, first + count):
                    await walk(kind, at)
                spent = (time.process_time() - start) / count * 1e6
                if toggle is not None:
                    toggle.block_end(kind.encode())
                best[kind] = min(best.get(kind, spent), spent)
        if toggle is None:
            for kind in KINDS:
                print(f"{kind}\t{best[kind]:.1f}", flush=True)
        await context.__aexit__(None, None, None)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", action="append", default=[], help="a checkout (its tree goes first on PYTHONPATH)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--wall", action="store_true", help="no valgrind: the process's CPU µs a request (best block)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child or None, args.requests, 5)
        return
    work = Path(tempfile.mkdtemp(prefix="run-path-instructions-"))
    library = toggle_library(work, args.wall)
    results: dict[str, dict[str, list[float]]] = {code: {} for code in args.code}
    for round_ in range(args.rounds):
        for index, code in enumerate(args.code):  # alternating: old, new, old, new, ...
            env = {**os.environ, "PYTHONPATH": code, "PYTHONHASHSEED": "0"}
            for name, value in measure(__file__, ["--requests", str(args.requests)], env, library,
                                       work / f"{round_}-{index}", args.requests).items():
                results[code].setdefault(name, []).append(value)
    unit = "process CPU µs a request (best block)" if args.wall else "loop-thread instructions a request"
    print(f"{'request':12}" + "".join(f"{Path(code).name:>44}" for code in args.code) + f"   ({unit}; each round)")
    for kind in KINDS:
        cells = []
        for code in args.code:
            values = results[code][kind]
            shown = ", ".join(f"{v:,.0f}" for v in values)
            cells.append(f"{statistics.median(values):,.0f} ({shown})" if len(values) > 1 else shown)
        print(f"{kind:12}" + "".join(f"{cell:>44}" for cell in cells))


if __name__ == "__main__":
    main()
