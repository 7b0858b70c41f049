"""Instructions the event loop spends per request to find its route, old code against new (issue 22):
callgrind counts of ``await app(scope, receive, send)`` for requests that FastAPI routes and then
answers before any endpoint runs (a 422 for a bad path parameter or body, a 404, a 405), so what
differs between two checkouts is the finding of the route (the answer is the same).

    python bench/route_instructions.py --code /path/old --code /path/new [--rounds 2] [--requests 50]
    python bench/route_instructions.py --code /path/new --wall      # no valgrind: µs a request

Each checkout's process builds the app (``create_app``, services off, a SQLite home of its own),
sends every request once (the routes' first use builds them), then per request kind a block of
``--requests`` requests counted by callgrind's client requests (a tiny C library built with gcc and
valgrind's headers) -- the calling thread only, user space only. Prints instructions per request.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOGGLE_C = """#include <valgrind/callgrind.h>
void block_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void block_end(const char *name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
"""

RUN = "/api/flow_runs/not-a-uuid"
# (name, method, path, body, the answer's status)
REQUESTS = [
    ("worker heartbeat", "POST", "/api/work_pools/pool/workers/heartbeat", b"{", 422),
    ("claim", "POST", f"{RUN}/claim", b"", 422),
    ("set state", "POST", f"{RUN}/state", b"{", 422),
    ("run heartbeat", "POST", f"{RUN}/heartbeat", b"", 422),
    ("log batch", "POST", f"{RUN}/logs", b"{", 422),
    ("task-run create", "POST", "/api/task_runs", b"{", 422),
    ("task-run holder heartbeat", "POST", "/api/task_runs/holders/not-a-uuid/heartbeat", b"", 422),
    ("read a run (UI)", "GET", RUN, b"", 422),
    ("read a pool's workers (UI)", "GET", "/api/work_pools/pool/workers?limit=x", b"", 404),
    ("health", "GET", "/api/health", b"", 200),
    ("404", "GET", "/api/nothing", b"", 404),
    ("405", "DELETE", f"{RUN}/claim", b"", 405),
]


def scope_of(method: str, path: str) -> dict:
    path, _, query = path.partition("?")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
            "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1), "server": ("test", 80)}


async def request(app, method: str, path: str, body: bytes, top=None) -> tuple[int, bytes]:
    """``app``'s answer to one request: its status and body. ``top``: the application an inner
    layer of the ASGI stack is called under (what Starlette's own ``__call__`` puts in the scope)."""
    status, answer = 0, []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            answer.append(message.get("body", b""))

    scope = scope_of(method, path)
    if top is not None:
        scope["app"] = top
    await app(scope, receive, send)
    return status, b"".join(answer)


def child(library: str | None, count: int, blocks: int) -> None:
    os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-route-instructions-")
    from orchestrator.server.api.app import create_app
    from orchestrator.server.db.session import migrate
    from orchestrator.settings import Settings

    app = create_app(Settings(), run_services=False)
    migrate(app.state.ctx.engine)  # the requests read nothing, but a 503 would hide a missing table
    if os.environ.get("ROUTE_BENCH_LOADED"):
        app.lazy_routes.load_all()  # as after a request for the OpenAPI document: every family in its place
    toggle = ctypes.CDLL(library) if library else None

    async def main() -> None:
        for name, method, path, body, expected in REQUESTS:
            for _ in range(3):
                status, _ = await request(app, method, path, body)
            assert status == expected, (name, status, expected)
        for name, method, path, body, _ in REQUESTS:
            if toggle is not None:
                toggle.block_start()
                for _ in range(count):
                    await request(app, method, path, body)
                toggle.block_end(name.encode())
            else:
                best = []
                for _ in range(blocks):
                    start = time.perf_counter()
                    for _ in range(count):
                        await request(app, method, path, body)
                    best.append((time.perf_counter() - start) / count * 1e6)
                print(f"{name}\t{min(best):.1f}", flush=True)

    asyncio.run(main())


def instructions(out_dir: Path) -> dict[str, int]:
    """Each toggled block's instructions, by name, from a directory with one dump per name."""
    return dict(block for dump in out_dir.glob("callgrind.out.*") if (block := dumped_block(dump)) is not None)


def dumped_block(dump: Path) -> tuple[str, int] | None:
    """The toggled block one callgrind dump counted: its name and its instructions (None: not a block's dump)."""
    lines = dump.read_text(errors="replace").splitlines()
    name = next((line.removeprefix("desc: Trigger: ") for line in lines if line.startswith("desc: Trigger:")), "")
    total = next((int(line.split()[1]) for line in lines if line.startswith("summary:")), None)
    if not name.startswith("Client Request: ") or total is None:
        return None
    return name.removeprefix("Client Request: "), total


def toggle_library(work: Path, wall: bool) -> Path | None:
    """The callgrind toggle (``TOGGLE_C``) built in ``work``; None for a ``--wall`` run (no valgrind)."""
    if wall:
        return None
    library = work / "toggle.so"
    (work / "toggle.c").write_text(TOGGLE_C)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(work / "toggle.c")], check=True)
    return library


def measure(script: str, flags: list[str], env: dict[str, str], library: Path | None, out_dir: Path,
            requests: int) -> dict[str, float]:
    """One child run of an instruction script (``script --child=... *flags``), each named block's figure a
    request: without ``library``, the child's own lines ``name<TAB>value`` (``--wall``); with it, the
    instructions callgrind counted in each toggled block (``instructions``) over ``requests``."""
    python = os.path.realpath(sys.executable)
    if library is None:
        out = subprocess.run([python, script, "--child=", *flags], env=env, check=True, capture_output=True,
                             text=True).stdout
        return {name: float(value) for name, value in (line.split("\t") for line in out.splitlines())}
    out_dir.mkdir()
    subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no",
                    f"--callgrind-out-file={out_dir}/callgrind.out.%p", python, script, f"--child={library}", *flags],
                   env=env, check=True, capture_output=True)
    return {name: total / requests for name, total in instructions(out_dir).items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", action="append", default=[], help="a checkout (its tree goes first on PYTHONPATH)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--wall", action="store_true", help="no valgrind: the best block's µs a request")
    parser.add_argument("--loaded", action="store_true", help="every lazy family loaded first (as after the UI's "
                        "or the OpenAPI document's first request)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child or None, args.requests, 5)
        return
    work = Path(tempfile.mkdtemp(prefix="route-instructions-"))
    library = toggle_library(work, args.wall)
    results: dict[str, dict[str, list[float]]] = {code: {} for code in args.code}
    for round_ in range(args.rounds):
        for code in args.code:
            env = {**os.environ, "PYTHONPATH": code, "PYTHONHASHSEED": "0", "ROUTE_BENCH_LOADED": "1" if args.loaded else ""}
            out_dir = work / f"{round_}-{len(results[code].get('404', []))}-{Path(code).name}"
            for name, value in measure(__file__, ["--requests", str(args.requests)], env, library, out_dir,
                                       args.requests).items():
                results[code].setdefault(name, []).append(value)
    unit = "µs a request (best block)" if args.wall else "instructions a request"
    print(f"{'request':28}" + "".join(f"{Path(code).name:>16}" for code in args.code) + f"   ({unit}, median of rounds)")
    for name, *_ in REQUESTS:
        row = [statistics.median(results[code][name]) for code in args.code]
        print(f"{name:28}" + "".join(f"{value:16,.0f}" if not args.wall else f"{value:16.1f}" for value in row))


if __name__ == "__main__":
    main()
