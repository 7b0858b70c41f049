"""Latency of the Docker and Kubernetes workers, run as a user would (subprocesses + CLI).

For each kind: ``orch server start`` on PostgreSQL (database ``orch_bench_workers``, recreated) and
Redis (db 8, flushed), a work pool of the kind, a deployment of a no-op flow with the job variables
the testenv needs, ``orch worker start --pool P --limit 4``, 2 warm-up runs, then one run at a time:

* docker: API create -> RUNNING, server side (``start_time - created``) and client side (POST sent
  -> RUNNING seen, 20 ms polling), with the phases created -> PENDING (publish, broker, claim) and
  PENDING -> RUNNING (container create + start, interpreter and engine start in the container).
  The container is ``local/python:3.11`` with the tests' venv bind-mounted and host networking.
* kubernetes: API create -> Job created: POST sent -> the Job's ADDED event seen on a watch of the
  namespace (same clock), plus create -> RUNNING (server side) through the stand-in kubelet.

Needs ``../shared/testenv``: ``docker.sh start`` and ``k8s.sh up`` (``KUBECONFIG`` from ``k8s.sh env``).
Usage: python bench/workers.py [--runs 20] [--kind docker|kubernetes|both]
Prints a Markdown table and rewrites only the "## Docker and Kubernetes workers" section of
bench/RESULTS.md (below the notes marker, which bench/skeleton.py keeps).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers (container venv)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# bench/skeleton.py rewrites RESULTS.md above this marker and keeps what is below: this section lives below.
NOTES = "<!-- notes: hand-written text below this line is kept when the script rewrites the file -->"
ORCH = str(Path(sys.executable).parent / "orch") if (Path(sys.executable).parent / "orch").exists() else "orch"
PG_ADMIN = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qc"]
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/orch_bench_workers"
REDIS_URL = "redis://127.0.0.1:6379/8"
FLOWS_PY = "from orchestrator import flow\n\n\n@flow\ndef noop() -> None:\n    pass\n"
NAMESPACE = "orch-bench"
SECTION = "## Docker and Kubernetes workers"
POLL = 0.02
CAVEATS = (
    "- Docker: the image is present (`image_pull_policy` Never); a pull, when the policy asks for one, comes on\n"
    "  top. PENDING → RUNNING is container create + start (~0.13 s alone) plus the engine's start inside it.\n"
    "- Kubernetes: \"Job created\" is the moment the API server has the Job; RUNNING goes through the testenv's\n"
    "  stand-in kubelet, which runs the pod's command as a host process (no sandbox, no image pull): a real\n"
    "  node adds its own pod start-up time to that figure, not to the first.\n"
)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def wait_until(what: str, check: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # not up yet
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """Server, pool, deployment and worker of one kind, as subprocesses."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tmp = Path(tempfile.mkdtemp(prefix=f"orch-bench-{kind}-"))
        self.tmp.chmod(0o755)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        self.env.update(ORCH_HOME=str(self.tmp / "home"), ORCH_API_URL=self.api_url,
                        ORCH_DATABASE_URL=PG_URL, ORCH_BROKER_URL=REDIS_URL)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append((name, subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)))

    def alive(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
        return True

    def start(self, job_variables: Callable[[Path], dict[str, Any]]) -> str:
        """Start everything; ``job_variables(flows_dir)`` gives the deployment's job variables."""
        from orchestrator import schemas
        from orchestrator.client import Client

        subprocess.run([*PG_ADMIN, "DROP DATABASE IF EXISTS orch_bench_workers WITH (FORCE)"], check=True, timeout=60,
                       capture_output=True)
        subprocess.run([*PG_ADMIN, "CREATE DATABASE orch_bench_workers"], check=True, timeout=60)
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-n", "8", "FLUSHDB"], check=True, timeout=30,
                       capture_output=True)
        (self.tmp / "home").mkdir()
        flows = self.tmp / "flows"
        flows.mkdir()
        (flows / "flows.py").write_text(FLOWS_PY)
        self.client = Client(self.api_url, timeout=30.0)
        self.spawn("server", [ORCH, "server", "start", "--port", str(self.port)])
        wait_until("GET /api/health", self.client.health, 90)
        pool = f"bench-{self.kind}"
        self.client.create_work_pool(schemas.WorkPoolCreate(name=pool, type=self.kind))
        deployment = self.client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="noop", name="bench", entrypoint="flows.py:noop", path=str(flows), work_pool_name=pool,
            job_variables=job_variables(flows)))
        self.spawn("worker", [ORCH, "worker", "start", "--pool", pool, "--limit", "4"])
        wait_until("an ONLINE worker", lambda: any(w.status == "ONLINE" for w in self.client.list_workers(pool)), 90)
        self.alive()
        return str(deployment.id)

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if getattr(self, "client", None):
            self.client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def one_run(stack: Stack, deployment_id: str) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
    """POST a run, poll until RUNNING (client time), wait until final; return the run and states."""
    api = stack.client
    sent = time.perf_counter()
    run = api.request("POST", f"/deployments/{deployment_id}/runs", body={})
    deadline = time.monotonic() + 120
    while run["start_time"] is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run['id']} not RUNNING after 120 s (state {run['state']})")
        time.sleep(POLL)
        run = api.request("GET", f"/flow_runs/{run['id']}")
    client_seconds = time.perf_counter() - sent
    run = api.request("GET", f"/flow_runs/{run['id']}/wait", params={"timeout": 120}, timeout=150)
    if run["state"]["type"] != "COMPLETED":
        raise RuntimeError(f"run {run['id']} ended {run['state']}")
    return client_seconds, run, api.request("GET", f"/flow_runs/{run['id']}/states")


def phases(run: dict[str, Any], states: list[dict[str, Any]]) -> dict[str, float]:
    at = {s["type"]: parse_ts(s["timestamp"]) for s in states}
    created = parse_ts(run["created"])
    return {"server": (parse_ts(run["start_time"]) - created).total_seconds(),
            "claim": (at["PENDING"] - created).total_seconds(),
            "start": (at["RUNNING"] - at["PENDING"]).total_seconds()}


def bench_docker(runs: int) -> dict[str, list[float]]:
    from tests.containers import PYTHON_IMAGE, container_volumes, make_container_venv

    venv = make_container_venv()
    stack = Stack("docker")
    out: dict[str, list[float]] = {"server": [], "client": [], "claim": [], "start": []}
    try:
        deployment_id = stack.start(lambda flows: {
            "image": PYTHON_IMAGE, "command": [str(venv / "bin" / "python"), "-m", "orchestrator.engine"],
            "volumes": container_volumes(venv, flows), "network_mode": "host", "image_pull_policy": "Never",
            "auto_remove": True, "stream_output": False})
        for i in range(runs + 2):
            client_seconds, run, states = one_run(stack, deployment_id)
            if i >= 2:  # two warm-up runs
                out["client"].append(client_seconds)
                for key, value in phases(run, states).items():
                    out[key].append(value)
    finally:
        stack.stop()
    return out


def bench_kubernetes(runs: int) -> dict[str, list[float]]:
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException

    admin = config.new_client_from_config()
    core, batch = client.CoreV1Api(admin), client.BatchV1Api(admin)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as error:
        if error.status != 409:
            raise
    wait_until("the namespace's default ServiceAccount token",
               lambda: core.read_namespaced_service_account("default", NAMESPACE).secrets, 60)
    seen: dict[str, float] = {}  # run id -> perf_counter when its Job's ADDED event arrived
    stop = threading.Event()

    def watch_jobs() -> None:
        while not stop.is_set():
            for event in watch.Watch().stream(batch.list_namespaced_job, NAMESPACE, timeout_seconds=5):
                if event["type"] == "ADDED":
                    run_id = (event["object"].metadata.labels or {}).get("orchestrator.flow-run-id")
                    if run_id:
                        seen.setdefault(run_id, time.perf_counter())

    watcher = threading.Thread(target=watch_jobs, daemon=True)
    watcher.start()
    stack = Stack("kubernetes")
    out: dict[str, list[float]] = {"job": [], "server": [], "claim": [], "start": []}
    try:
        deployment_id = stack.start(lambda flows: {
            "namespace": NAMESPACE, "command": [sys.executable, "-m", "orchestrator.engine"],
            "ttl_seconds_after_finished": 30, "stream_output": False})
        for i in range(runs + 2):
            t0 = time.perf_counter()
            _, run, states = one_run(stack, deployment_id)
            if i >= 2:
                out["job"].append(seen[run["id"]] - t0)
                for key, value in phases(run, states).items():
                    out[key].append(value)
    finally:
        stop.set()
        stack.stop()
        batch.delete_collection_namespaced_job(NAMESPACE, propagation_policy="Background")
    return out


def table(results: dict[str, dict[str, list[float]]], runs: int) -> str:
    rows = []
    if "docker" in results:
        d = results["docker"]
        rows += [
            ("Docker: API create → RUNNING p50 (server: start_time − created)", "< 1.5 s", pct(d["server"], 0.5)),
            ("Docker: API create → RUNNING p95 (server)", "", pct(d["server"], 0.95)),
            ("Docker: API create → RUNNING p50 (client: POST → seen RUNNING, 20 ms polling)", "", pct(d["client"], 0.5)),
            ("↳ created → PENDING (publish, Redis, claim) p50", "", pct(d["claim"], 0.5)),
            ("↳ PENDING → RUNNING (container create + start, engine start inside) p50", "", pct(d["start"], 0.5)),
        ]
    if "kubernetes" in results:
        k = results["kubernetes"]
        rows += [
            ("Kubernetes: API create → Job created p50 (POST sent → Job ADDED on a watch)", "< 0.5 s",
             pct(k["job"], 0.5)),
            ("Kubernetes: API create → Job created p95", "", pct(k["job"], 0.95)),
            ("Kubernetes: API create → RUNNING p50 (server; stand-in kubelet runs the pod as a host process)", "",
             pct(k["server"], 0.5)),
            ("↳ created → PENDING p50", "", pct(k["claim"], 0.5)),
            ("↳ PENDING → RUNNING (Job → pod → bind → process → engine) p50", "", pct(k["start"], 0.5)),
        ]
    lines = [f"| metric ({runs} runs, PostgreSQL + Redis) | target | measured |", "|---|---|---|"]
    lines += [f"| {label} | {target} | {value * 1000:.0f} ms |" for label, target, value in rows]
    return "\n".join(lines)


def write_section(text: str, runs: int, kind: str, load_start: float) -> None:
    """Replace only this script's section (below the notes marker, which skeleton.py keeps)."""
    content = RESULTS.read_text() if RESULTS.exists() else NOTES + "\n"
    if NOTES not in content:
        content += "\n" + NOTES + "\n"
    section = (
        f"{SECTION}\n\n"
        f"- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; load average "
        f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (2 shared cores)\n"
        f"- Command: `python bench/workers.py --runs {runs} --kind {kind}` (see its docstring); Docker 20.10 and "
        "Kubernetes 1.20 from ../shared/testenv\n\n" + text + "\n\n" + CAVEATS
    )
    start = content.find(SECTION)
    if start < 0:
        content = content.rstrip("\n") + "\n\n" + section
    else:
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + section + (content[end:] if end >= 0 else "")
    RESULTS.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--kind", choices=["docker", "kubernetes", "both"], default="both")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    results: dict[str, dict[str, list[float]]] = {}
    if args.kind in ("docker", "both"):
        print("[docker] server, pool, deployment, worker; 2 warm-up runs, then", args.runs, flush=True)
        results["docker"] = bench_docker(args.runs)
    if args.kind in ("kubernetes", "both"):
        print("[kubernetes] server, pool, deployment, worker; 2 warm-up runs, then", args.runs, flush=True)
        results["kubernetes"] = bench_kubernetes(args.runs)
    text = table(results, args.runs)
    print(text)
    write_section(text, args.runs, args.kind, load_start)
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
