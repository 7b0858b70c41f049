"""Instructions the event loop's thread spends per request, by layer of the ASGI stack (issue 22):
callgrind counts of ``await layer(scope, receive, send)`` for real requests answered 2xx (a create
the fast way, a worker's heartbeat, a run's heartbeat, a run's state set) and a 404, with the
layer first the whole app, then each layer of its middleware stack in turn (Starlette's
``ServerErrorMiddleware``, FastAPI's telemetry and body-limit middlewares, ours, Starlette's
``ExceptionMiddleware``, FastAPI's ``AsyncExitStackMiddleware``, the router): what a layer costs
is the difference between its row and the next one's. ``--bare``: the same requests of a bare
FastAPI app (one async route per path, no middleware of its own), for comparison.

    python bench/layer_instructions.py --code /path/old --code /path/new [--requests 30] [--layers]
    python bench/layer_instructions.py --code /path/new --wall      # no valgrind: µs a request

Each checkout's process builds the app (``create_app``, services off, a SQLite home of its own),
runs its lifespan, makes a pool, a deployment and a run, sends each request a few times, then
counts blocks of ``--requests`` requests (the calling thread only: the endpoints' own threads are
not counted; user space only). ``route_instructions.py`` does the same for requests answered
before any endpoint runs.
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

from route_instructions import measure, toggle_library
from route_instructions import request as answer

KINDS = ("create (fast way)", "worker heartbeat", "run heartbeat", "set state", "404")


async def request(app, method: str, path: str, body: bytes, top) -> tuple[int | str, bytes]:
    try:
        return await answer(app, method, path, body, top)
    except Exception as error:  # noqa: BLE001 (under ``ExceptionMiddleware`` the 404 is raised, not answered)
        return type(error).__name__, b""


def bare_app():
    from fastapi import FastAPI, Response

    app = FastAPI()

    @app.post("/api/deployments/{deployment}/runs", status_code=201)
    async def create(deployment: str) -> dict:
        return {"id": deployment}

    @app.post("/api/work_pools/{name}/workers/heartbeat", response_class=Response)
    async def worker_beat(name: str):
        return Response(status_code=204)

    @app.post("/api/flow_runs/{run_id}/heartbeat")
    async def run_beat(run_id: str) -> dict:
        return {}

    @app.post("/api/flow_runs/{run_id}/state", status_code=201)
    async def state(run_id: str) -> dict:
        return {}

    return app


def child(library: str | None, count: int, layers: bool, bare: bool) -> None:
    os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-layer-instructions-")
    toggle = ctypes.CDLL(library) if library else None

    async def main() -> None:
        if bare:
            app = bare_app()
            deployment = run = "00000000-0000-0000-0000-000000000001"
            context = None
        else:
            from orchestrator.server.api.app import create_app
            from orchestrator.settings import Settings

            app = create_app(Settings(), run_services=False)
            context = app.router.lifespan_context(app)
            await context.__aenter__()
            await request(app, "POST", "/api/work_pools", json.dumps({"name": "idle", "type": "process"}).encode(), app)
            _, answer = await request(app, "POST", "/api/deployments", json.dumps({
                "flow_name": "noop", "name": "idle", "entrypoint": "flows.py:noop", "work_pool_name": "idle"}).encode(), app)
            deployment = json.loads(answer)["id"]
            _, answer = await request(app, "POST", f"/api/deployments/{deployment}/runs", b"{}", app)
            run = json.loads(answer)["id"]
            await request(app, "POST", f"/api/flow_runs/{run}/state", b'{"type": "PENDING"}', app)
            await request(app, "POST", f"/api/flow_runs/{run}/state", b'{"type": "RUNNING"}', app)
        requests = {
            "create (fast way)": ("POST", f"/api/deployments/{deployment}/runs", b"{}"),
            "worker heartbeat": ("POST", "/api/work_pools/idle/workers/heartbeat", b'{"name": "w1"}'),
            "run heartbeat": ("POST", f"/api/flow_runs/{run}/heartbeat", b""),
            # RUNNING again: accepted or refused the same way each time (the run stays RUNNING)
            "set state": ("POST", f"/api/flow_runs/{run}/state", b'{"type": "RUNNING"}'),
            "404": ("GET", "/api/nothing", b""),
        }
        stack = [("app", app)]
        if layers:
            app.middleware_stack = app.middleware_stack or app.build_middleware_stack()
            layer = app.middleware_stack
            while layer is not app.router:  # the router alone needs the exit stack of the layer above
                stack.append((type(layer).__name__, layer))
                layer = layer.app
        for name, (method, path, body) in requests.items():
            for position, (layer_name, layer) in enumerate(stack):
                for _ in range(3):
                    status, _ = await request(layer, method, path, body, app)
                label = f"{name}|{position} {layer_name}|{status}"  # numbered: the rows in the stack's order
                if toggle is not None:
                    toggle.block_start()
                    for _ in range(count):
                        await request(layer, method, path, body, app)
                    toggle.block_end(label.encode())
                else:
                    best = []
                    for _ in range(5):
                        start = time.perf_counter()
                        for _ in range(count):
                            await request(layer, method, path, body, app)
                        best.append((time.perf_counter() - start) / count * 1e6)
                    print(f"{label}\t{min(best):.1f}", flush=True)
        if context is not None:
            await context.__aexit__(None, None, None)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", action="append", default=[], help="a checkout (its tree goes first on PYTHONPATH)")
    parser.add_argument("--bare", action="store_true", help="a bare FastAPI app as one more column")
    parser.add_argument("--layers", action="store_true", help="each layer of the stack, not only the whole app")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--wall", action="store_true", help="no valgrind: the best block's µs a request")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child or None, args.requests, args.layers, args.child_bare)
        return
    work = Path(tempfile.mkdtemp(prefix="layer-instructions-"))
    library = toggle_library(work, args.wall)
    columns = [(code, False) for code in args.code] + ([(args.code[0], True)] if args.bare else [])
    results: dict[str, dict[str, list[float]]] = {f"{Path(c).name}{' bare' if b else ''}": {} for c, b in columns}
    for round_ in range(args.rounds):
        for code, bare in columns:
            column = f"{Path(code).name}{' bare' if bare else ''}"
            env = {**os.environ, "PYTHONPATH": code, "PYTHONHASHSEED": "0"}
            flags = ["--requests", str(args.requests)] + (["--layers"] if args.layers else []) + (
                ["--child-bare"] if bare else [])
            out_dir = work / f"{round_}-{column.replace(' ', '-')}"
            for label, value in measure(__file__, flags, env, library, out_dir, args.requests).items():
                results[column].setdefault(label, []).append(value)
    unit = "µs a request (best block)" if args.wall else "instructions a request"
    # a block's name: request|layer|status; rows by request and layer, each column's status shown
    rows: dict[str, dict[str, tuple[str, list[float]]]] = {}
    for column, found in results.items():
        for label, values in found.items():
            row, status = label.rsplit("|", 1)
            rows.setdefault(row, {})[column] = (status, values)
    print(f"{'request | layer':50}" + "".join(f"{c:>20}" for c in results) + f"   ({unit}, median of rounds; status)")
    for kind in KINDS:
        for row, cells in sorted(rows.items(), key=lambda item: int(item[0].split("|")[1].split()[0])):
            if not row.startswith(kind + "|"):
                continue
            text = ""
            for column in results:
                if column not in cells:
                    text += f"{'-':>20}"
                    continue
                status, values = cells[column]
                value = statistics.median(values)
                text += f"{value:13.1f}" if args.wall else f"{value:13,.0f}"
                text += f" {status[:6]:>6}"
            print(f"{row:50}" + text)

if __name__ == "__main__":
    main()
