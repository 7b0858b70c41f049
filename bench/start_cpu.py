"""``orch server start`` of several source trees, alternating: exec → health OK on a new database and
on a restart, with the server's CPU time (what a loaded machine distorts least) and idle RSS; and
what the first run's requests cost the server after its first start (work moved from the start to
a first request shows there).

    python bench/start_cpu.py TREE[,TREE...] [--rounds 5] [--config postgres|embedded]
                              [--database orch_bench_start] [--redis-db 12]

Each TREE is a checkout (``floor`` stands for bench/start_floor.py's bare FastAPI + SQLAlchemy +
uvicorn app, ``stack`` for its server stack floor: the same with pydantic-settings, the ORM with one
mapped table and the broker reached at start); its code is put first on PYTHONPATH, the ``orch`` console script of this interpreter
runs it. Per round and tree: a new database (PostgreSQL: ``--database`` recreated, Redis db flushed;
embedded: a new ORCH_HOME), a first start, a restart on the database it made; after each start
health is answered, the CPU the server's process used until then is read from /proc, then one
request (``GET /api/work_pools``) must answer 200 (the server's CPU for it: ``first request CPU ms``;
FastAPI builds the included routers' routes at the first request that walks them); after the first start, the requests of a first
run as a worker and the flow-run process send them (a work pool, a deployment, a run created, claimed,
its infrastructure, RUNNING, COMPLETED: ``first_run``), timed and the server's CPU read before and
after; after the restart, the RSS once idle for 5 s.
Prints each round and the medians. Compare trees by CPU: wall clock follows the machine's load.
Each tree is byte-compiled first, as an installed package is (``compare.ours.precompile``): with
``PYTHONDONTWRITEBYTECODE=1`` (set on this project's machines) a checkout's modules would be compiled
again at every start, a cost that grows with the tree and that no user's install pays
(``--no-precompile`` measures it anyway).
"""

from __future__ import annotations

import http.client
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
sys.path.insert(0, str(BENCH.parent))

import start_trees
from start_floor import healthy

from tests.harness import ORCH_SCRIPT, free_port, fresh_postgres

FIGURES = ("new database ms", "new database CPU ms", "restart ms", "restart CPU ms", "idle RSS MB",
           "first request CPU ms", "first run ms", "first run CPU ms")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def call(port: int, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=None if body is None else json.dumps(body),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path} answered {response.status}: {answer[:500]!r}")
    return json.loads(answer) if answer else {}


def first_run(port: int) -> None:
    """The requests of a first run on a new server: its pool, its deployment, the run created, claimed
    (as a worker claims it), its infrastructure reported, RUNNING and COMPLETED (as the flow-run
    process reports them)."""
    call(port, "POST", "/api/work_pools", {"name": "first", "type": "process"})
    deployment = call(port, "POST", "/api/deployments", {
        "flow_name": "noop", "name": "first", "entrypoint": "flows.py:noop", "work_pool_name": "first"})["id"]
    run = call(port, "POST", f"/api/deployments/{deployment}/runs", {})["id"]
    call(port, "POST", f"/api/flow_runs/{run}/claim", {"worker_name": "w", "pool": "first"})
    call(port, "POST", f"/api/flow_runs/{run}/infrastructure", {"infrastructure_id": "process:bench:1"})
    call(port, "POST", f"/api/flow_runs/{run}/state", {"type": "RUNNING", "worker_name": "w", "flow_run_name": None})
    call(port, "POST", f"/api/flow_runs/{run}/state", {"type": "COMPLETED", "worker_name": "w", "result": None})


def start(tree: str, env: dict[str, str], port: int, floor_dir: Path, *, idle: bool,
          run: bool = False) -> tuple[float, float, float, float, float, float]:
    """Seconds exec → health, CPU seconds then, RSS (MB) after 5 s idle (0 unless ``idle``),
    with ``run`` the seconds and the server's CPU seconds of ``first_run`` (else 0, 0), and the
    server's CPU seconds of the first request after health (``GET /api/work_pools``)."""
    if tree in ("floor", "stack"):
        env = {**env, "PYTHONPATH": str(floor_dir), **({"FLOOR_STACK": "1"} if tree == "stack" else {})}
        app = "floorapp:app" if tree == "floor" else "stackapp:app"
        argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    else:
        env = {**env, "PYTHONPATH": tree}
        argv = [*ORCH_SCRIPT, "server", "start", "--port", str(port)]
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = began + 120
        while not healthy(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{tree}: exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{tree}: no health answer within 120 s")
            time.sleep(0.005)
        wall, cpu = time.perf_counter() - began, cpu_seconds(proc.pid)
        request_cpu = 0.0
        if tree not in ("floor", "stack"):  # the API works right after health
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/api/work_pools")
            response = connection.getresponse()
            response.read()
            request_cpu = cpu_seconds(proc.pid) - cpu
            if response.status != 200:
                raise RuntimeError(f"{tree}: GET /api/work_pools right after health answered {response.status}")
        run_wall = run_cpu = 0.0
        if run and tree not in ("floor", "stack"):
            cpu0, began = cpu_seconds(proc.pid), time.perf_counter()
            first_run(port)
            run_wall, run_cpu = time.perf_counter() - began, cpu_seconds(proc.pid) - cpu0
        rss = 0.0
        if idle:
            time.sleep(5)
            rss = rss_mb(proc.pid)
        return wall, cpu, rss, run_wall, run_cpu, request_cpu
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = start_trees.parser(__doc__.splitlines()[0], trees="comma-separated checkouts, or 'floor'", rounds=5,
                                database="orch_bench_start")
    parser.add_argument("--config", choices=("postgres", "embedded"), default="postgres")
    parser.add_argument("--no-precompile", action="store_true", help="leave the trees' .pyc files as they are")
    args = parser.parse_args()
    trees, floor_dir = start_trees.ready(args.trees, "start-cpu-floor-", compiled=not args.no_precompile)
    port = free_port()
    figures = {tree: {name: [] for name in FIGURES} for tree in trees}
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds, trees alternating; {args.config}")
    for tree in start_trees.turns(trees, args.rounds):
        home = Path(tempfile.mkdtemp(prefix="start-cpu-"))
        if args.config == "postgres":
            env = start_trees.environment(home, *fresh_postgres(args.database, args.redis_db))
        else:
            env = start_trees.environment(home)
            env["FLOOR_DATABASE_URL"] = f"sqlite:///{home / 'floor.db'}"
        first, first_cpu, _, run, run_cpu, request_cpu = start(tree, env, port, floor_dir, idle=False, run=True)
        again, again_cpu, rss, _, _, _ = start(tree, env, port, floor_dir, idle=True)
        for name, value in zip(FIGURES, (first * 1000, first_cpu * 1000, again * 1000, again_cpu * 1000, rss,
                                         request_cpu * 1000, run * 1000, run_cpu * 1000), strict=True):
            figures[tree][name].append(value)
        print(f"  {tree}: new database {first * 1000:.0f} ms (CPU {first_cpu * 1000:.0f}), restart "
              f"{again * 1000:.0f} ms (CPU {again_cpu * 1000:.0f}), idle RSS {rss:.1f} MB, first request CPU "
              f"{request_cpu * 1000:.0f} ms, first run "
              f"{run * 1000:.0f} ms (CPU {run_cpu * 1000:.0f}); "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    print("medians: " + ", ".join(FIGURES))
    for tree in trees:
        print(f"  {tree}: " + ", ".join(f"{statistics.median(figures[tree][name]):.0f}" for name in FIGURES))


if __name__ == "__main__":
    main()
