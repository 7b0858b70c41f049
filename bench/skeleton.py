"""Latency benchmark of the walking skeleton, run exactly as a user would (subprocesses + CLI).

For each configuration -- ``embedded`` (fresh ORCH_HOME, SQLite + kombu SQLAlchemy broker) and
``postgres`` (PostgreSQL database ``orch_bench`` recreated + Redis db 9 flushed) -- it starts
``orch server start``, creates a process work pool, deploys a no-op flow, starts
``orch worker start --limit 4``, waits for the worker's heartbeat, does 2 warm-up runs and measures:

1. API create -> RUNNING of a no-op flow run, one run at a time:
   server-side ``start_time - created`` (GET /api/flow_runs/{id}) over runs awaited with the
   long-poll endpoint only, and, over a second set of runs, client-side wall time from sending the
   POST to first seeing ``start_time`` set (polling every 20 ms, which loads the server). The run's state
   history also gives the phases created -> PENDING (publish, broker, claim) and
   PENDING -> RUNNING (process start, engine imports, loading the flow).
2. ``run_deployment("noop/bench", timeout=None)`` wall time (create + wait until COMPLETED).
3. ``python -c "import orchestrator"`` wall time with the real interpreter (median of 10).

Usage: python bench/skeleton.py [--runs 20] [--config embedded|postgres|both]
Prints a Markdown table and writes it to bench/RESULTS.md (text after the NOTES marker is kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.harness: the one way tests and benchmarks start the system
    sys.path.insert(1, str(REPO))

from tests import harness

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NOTES = "<!-- notes: hand-written text below this line is kept when the script rewrites the file -->"
ORCH = harness.ORCH_SCRIPT[0]
DATABASE, REDIS_DB = "orch_bench", 9
FLOWS_PY = "from orchestrator import flow\n\n\n@flow\ndef noop() -> None:\n    pass\n"
POLL = 0.02


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class Stack(harness.Stack):
    """Server + pool + deployment + worker of one configuration, all as subprocesses started the
    way the tests start them (``tests.harness``), with the CLI a user types (the ``orch`` script)."""

    def __init__(self, config: str) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix=f"orch-bench-{config}-")), orch=harness.ORCH_SCRIPT)
        self.config = config
        self.tmp = self.root

    def run(self, argv: list[str], cwd: Path | None = None) -> None:
        subprocess.run(argv, env=self.env, cwd=cwd or self.project, check=True, timeout=120, capture_output=True)

    def setup(self) -> None:
        """A fresh database and broker, the server, pool ``bench``, deployment ``noop/bench`` (its
        flow in the project folder) and ``orch worker start --limit 4``, all up."""
        if self.config == "postgres":
            self.env.update(harness.postgres_env(*harness.fresh_postgres(DATABASE, REDIS_DB)))
        self.start_server(timeout=90)
        self.run([ORCH, "work-pool", "create", "bench", "--type", "process"])
        (self.project / "flows.py").write_text(FLOWS_PY)
        self.run([sys.executable, "-c", "from flows import noop; noop.deploy(name='bench', work_pool_name='bench')"])
        self.start_worker("bench", "--limit", "4", timeout=90)

    def stop(self, grace: float = 20.0) -> None:
        super().stop(grace)
        shutil.rmtree(self.root, ignore_errors=True)


def measure_create_to_running(stack: Stack, deployment_id: str, runs: int, *, poll: bool) -> dict[str, list[float]]:
    """One run at a time: POST, (if ``poll``) poll until start_time is set, then long-poll until final."""
    api = stack.client
    out: dict[str, list[float]] = {"server": [], "client": [], "claim": [], "start": [], "flow": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        run = api.request("POST", f"/deployments/{deployment_id}/runs", body={})
        deadline = time.monotonic() + 60
        while poll and run["start_time"] is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run['id']} not RUNNING after 60 s (state {run['state']['type']})")
            time.sleep(POLL)
            run = api.request("GET", f"/flow_runs/{run['id']}")
        if poll:
            out["client"].append(time.perf_counter() - t0)
        run = api.request("GET", f"/flow_runs/{run['id']}/wait", params={"timeout": 60}, timeout=90)
        if run["state"]["type"] != "COMPLETED":
            raise RuntimeError(f"run {run['id']} ended {run['state']}")
        out["server"].append((parse_ts(run["start_time"]) - parse_ts(run["created"])).total_seconds())
        at = {s["type"]: parse_ts(s["timestamp"]) for s in api.request("GET", f"/flow_runs/{run['id']}/states")}
        out["claim"].append((at["PENDING"] - parse_ts(run["created"])).total_seconds())
        out["start"].append((at["RUNNING"] - at["PENDING"]).total_seconds())
        out["flow"].append((at["COMPLETED"] - at["RUNNING"]).total_seconds())
    return out


def measure_run_deployment(stack: Stack, runs: int) -> list[float]:
    from orchestrator import run_deployment

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("ORCH_")}
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("ORCH_")})
    try:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run = run_deployment("noop/bench", timeout=None)
            times.append(time.perf_counter() - t0)
            if run.state.type != "COMPLETED":
                raise RuntimeError(f"run {run.id} ended {run.state}")
        return times
    finally:
        for k in [k for k in os.environ if k.startswith("ORCH_")]:
            del os.environ[k]
        os.environ.update(saved)


def measure_import(env: dict[str, str], runs: int = 10) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import orchestrator"], env=env, check=True, timeout=60)
        times.append(time.perf_counter() - t0)
    return times


def bench(config: str, runs: int) -> dict[str, float]:
    stack = Stack(config)
    try:
        print(f"[{config}] starting server, pool, deployment and worker ...", flush=True)
        stack.setup()
        deployment_id = stack.client.request("GET", "/deployments/name/noop/bench")["id"]
        print(f"[{config}] warm-up, then {runs} runs of each measurement ...", flush=True)
        measure_create_to_running(stack, deployment_id, 2, poll=False)
        phases = measure_create_to_running(stack, deployment_id, runs, poll=False)
        phases["client"] = measure_create_to_running(stack, deployment_id, runs, poll=True)["client"]
        rd = measure_run_deployment(stack, runs)
        imp = measure_import(stack.env)
    finally:
        stack.stop()
    return {
        "c2r_p50": pct(phases["server"], 0.5), "c2r_p95": pct(phases["server"], 0.95),
        "c2r_client_p50": pct(phases["client"], 0.5), "c2r_client_p95": pct(phases["client"], 0.95),
        "claim_p50": pct(phases["claim"], 0.5), "start_p50": pct(phases["start"], 0.5),
        "flow_p50": pct(phases["flow"], 0.5),
        "rd_p50": pct(rd, 0.5), "rd_p95": pct(rd, 0.95), "import_median": statistics.median(imp),
    }


ROWS = [  # key, label, target
    ("c2r_p50", "API create → RUNNING p50 (server: start_time − created)", "< 300 ms (PostgreSQL + Redis)"),
    ("c2r_p95", "API create → RUNNING p95 (server)", ""),
    ("c2r_client_p50", "API create → RUNNING p50 (client: POST → seen RUNNING, 20 ms polling, separate runs)", ""),
    ("c2r_client_p95", "API create → RUNNING p95 (client)", ""),
    ("claim_p50", "↳ phase created → PENDING (publish, broker, claim) p50", ""),
    ("start_p50", "↳ phase PENDING → RUNNING (process start, engine imports, load flow) p50", ""),
    ("flow_p50", "↳ phase RUNNING → COMPLETED (no-op flow, log flush) p50", ""),
    ("rd_p50", "`run_deployment(name, timeout=None)` p50", "< 1 s"),
    ("rd_p95", "`run_deployment(name, timeout=None)` p95", ""),
    ("import_median", "`python -c \"import orchestrator\"` median of 10", "< 150 ms"),
]


def table(results: dict[str, dict[str, float]], runs: int) -> str:
    configs = [c for c in ("embedded", "postgres") if c in results]
    names = {"embedded": "embedded (SQLite + SQLAlchemy broker)", "postgres": "PostgreSQL + Redis"}
    lines = [f"| metric ({runs} runs) | target | " + " | ".join(names[c] for c in configs) + " |",
             "|---|---|" + "---|" * len(configs)]
    for key, label, target in ROWS:
        cells = [f"{results[c][key] * 1000:.0f} ms" for c in configs]
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(text: str, runs: int, config: str, load_start: float) -> None:
    kept = ""
    if RESULTS.exists() and NOTES in RESULTS.read_text():
        kept = RESULTS.read_text().split(NOTES, 1)[1]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    header = (
        "# Walking skeleton latency benchmark\n\n"
        f"- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}\n"
        f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end "
        "(other processes on the machine share the 2 cores)\n"
        f"- Command: `python bench/skeleton.py --runs {runs} --config {config}`\n"
        "- Reference, Prefect 3.9.1 on this machine: create → RUNNING 9.0 s (3.6 s with 1 s polling), "
        "import 1.1 s.\n\n"
    )
    RESULTS.write_text(header + text + "\n\n" + NOTES + (kept or "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs per figure (default 20)")
    parser.add_argument("--config", choices=["embedded", "postgres", "both"], default="both")
    args = parser.parse_args()
    configs = ["embedded", "postgres"] if args.config == "both" else [args.config]
    load_start = os.getloadavg()[0]
    results = {config: bench(config, args.runs) for config in configs}
    text = table(results, args.runs)
    print(text)
    write_results(text, args.runs, args.config, load_start)
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
