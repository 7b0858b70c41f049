"""Instructions per create of the create-run route, counted by callgrind: a measure the load of a
shared machine does not move (issue 22; CPU time there varies by ±30 % between batches).

    python bench/create_instructions.py --code /path/old --code /path/new [--rounds 2] [--blocks 3]
                                        [--creates 50] [--database orch_bench_instr] [--redis-db 19]
                                        [--every-thread]

Each round runs, for each checkout in turn, one process under ``valgrind --tool=callgrind`` that
builds the app of that checkout (``create_app``, services off: the dispatcher, scheduler and
reaper do nothing a create causes in its request), makes a pool and a deployment, warms up, then
calls the route's function (``routes.deployments.create_flow_run``: the session, the statement,
the run's event, the broker's publish, the hub's announcement, the answer) ``--creates`` times per
block, counting only inside the blocks (callgrind's client requests, through a tiny C library
built here with gcc and valgrind's headers). User space only: neither the kernel nor PostgreSQL.
Prints each block's instructions per create and the median per checkout.

Callgrind's collection switch (``CALLGRIND_TOGGLE_COLLECT``) is per thread: by default only the
calling thread -- the route's -- is counted; the hub's sender and listener threads are not (so the
figures of bench/RESULTS.md's "round 2" section are the route's thread). ``--every-thread``
collects every thread from the first block on and zeroes the counts at each block's start, so a
block's dump is the whole process's user-space instructions while it ran.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

TOGGLE_C = """#include <valgrind/callgrind.h>
void block_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void block_end(const char *name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
void all_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void all_end(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


def idle_deployment(client: Any) -> uuid.UUID:
    """A pool nobody serves and a deployment on it, made through the app's API (``client``: a
    ``TestClient``); the deployment's id (create_statement_pg.py's creates use it too)."""
    client.post("/api/work_pools", json={"name": "idle", "type": "process"})
    return uuid.UUID(client.post("/api/deployments", json={
        "flow_name": "noop", "name": "idle", "entrypoint": "flows.py:noop", "work_pool_name": "idle",
        "tags": ["bench", "events"]}).json()["id"])


def child(library: str, database: str, redis_db: int, blocks: int, creates: int, every_thread: bool) -> None:
    """Inside callgrind: the blocks of creates, each dumped under its name."""
    from tests.harness import fresh_postgres

    database_url, broker_url = fresh_postgres(database, redis_db)
    os.environ.update(ORCH_DATABASE_URL=database_url, ORCH_BROKER_URL=broker_url,
                      ORCH_HOME=tempfile.mkdtemp(prefix="orch-instructions-"))
    from fastapi.testclient import TestClient

    import orchestrator.server.api.routes.deployments as route
    from orchestrator import schemas
    from orchestrator.server.api.app import create_app
    from orchestrator.settings import Settings

    toggle = ctypes.CDLL(library)
    with TestClient(create_app(Settings(), run_services=False)) as client:
        ctx = client.app.state.ctx
        deployment = idle_deployment(client)
        body = schemas.FlowRunCreate()
        for _ in range(50):  # warm-up: connections, prepared statements, caches, the kept target
            route.create_flow_run(deployment, body, ctx)
        start, end = (toggle.all_start, toggle.all_end) if every_thread else (toggle.block_start, toggle.block_end)
        for block in range(blocks):
            start()
            for _ in range(creates):
                route.create_flow_run(deployment, body, ctx)
            end(f"block-{block}".encode())


def instructions(out_dir: Path) -> list[int]:
    """The instructions of each dumped block, in block order."""
    found: dict[int, int] = {}
    for dump in out_dir.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        name = next((line for line in text.splitlines() if line.startswith("desc: Trigger")), "")
        if "block-" not in name:
            continue
        total = next(line for line in text.splitlines() if line.startswith(("summary:", "totals:")))
        found[int(name.rsplit("block-", 1)[1])] = int(total.split()[1])
    return [found[k] for k in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", default=[], help="a checkout (repeat: each is measured in turn)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--creates", type=int, default=50, help="creates per block")
    parser.add_argument("--database", default="orch_bench_instr")
    parser.add_argument("--redis-db", type=int, default=19)
    parser.add_argument("--every-thread", action="store_true", help="count every thread of the process, not only the route's")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the toggle library: run as callgrind's child
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database, args.redis_db, args.blocks, args.creates, args.every_thread)
        return
    if not args.code:
        parser.error("give at least one --code")
    work = Path(tempfile.mkdtemp(prefix="create-instructions-"))
    library = work / "toggle.so"
    (work / "toggle.c").write_text(TOGGLE_C)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(work / "toggle.c")], check=True)
    python = os.path.realpath(sys.executable)  # not a shim: valgrind must run the interpreter itself
    per_code: dict[str, list[float]] = {code: [] for code in args.code}
    for round_ in range(args.rounds):
        for code in args.code:
            out_dir = work / f"r{round_}-{Path(code).name}"
            out_dir.mkdir()
            env = {**os.environ, "PYTHONPATH": str(Path(code).resolve())}
            collect = "yes" if args.every_thread else "no"
            subprocess.run(["valgrind", "--tool=callgrind", f"--collect-atstart={collect}", "--instr-atstart=no",
                            f"--callgrind-out-file={out_dir}/callgrind.out.%p", python, __file__, "--child",
                            str(library), "--database", args.database, "--redis-db", str(args.redis_db),
                            "--blocks", str(args.blocks), "--creates", str(args.creates),
                            *(["--every-thread"] if args.every_thread else [])],
                           cwd=code, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            counts = [n / args.creates for n in instructions(out_dir)]
            per_code[code] += counts
            print(f"round {round_ + 1} {code}: " + ", ".join(f"{c / 1000:,.1f}k" for c in counts)
                  + " instructions per create", flush=True)
    for code, counts in per_code.items():
        print(f"{code}: median {statistics.median(counts) / 1000:,.1f}k instructions per create "
              f"(range {min(counts) / 1000:,.1f}k-{max(counts) / 1000:,.1f}k, {len(counts)} blocks)")


if __name__ == "__main__":
    main()
