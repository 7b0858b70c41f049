"""Prefect's side: Prefect 3.9.1 from PyPI in its own virtual environment (never the system python,
whose packages are pinned for this project), ``prefect server start`` on 127.0.0.1 with analytics off
and its defaults (SQLite in a temporary PREFECT_HOME), a process work pool, the flows of
bench/prefect_flows deployed with ``flow.from_source(<local folder>).deploy()`` and
``prefect worker start --pool bench --type process --limit 8``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from compare.common import BENCH, NOT_YET, Side, compile_flows, parse_ts, wait_until

VERSION = "3.9.1"
VENV = Path(os.environ.get("ORCH_BENCH_PREFECT_VENV", "/var/cache/orch-bench/prefect-venv"))
PY = VENV / "bin" / "python"
PREFECT = VENV / "bin" / "prefect"
FLOWS = BENCH / "prefect_flows"
FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def installed_version() -> str | None:
    if not PY.exists():
        return None
    done = subprocess.run([str(PY), "-c", "import importlib.metadata as m; print(m.version('prefect'))"],
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_venv() -> None:
    """Create the venv and install prefect==3.9.1 into it, unless it is there already."""
    if installed_version() == VERSION:
        return
    print(f"[prefect] installing prefect=={VERSION} into {VENV} ...", flush=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    if not PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", f"prefect=={VERSION}"], check=True, timeout=1200)
    if installed_version() != VERSION:
        raise RuntimeError(f"prefect {VERSION} did not install into {VENV}")


def prefect_env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PREFECT_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}", VIRTUAL_ENV=str(VENV), PREFECT_HOME=str(home),
               PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


class PrefectSide(Side):
    label = f"Prefect {VERSION}"

    def __init__(self) -> None:
        from orchestrator.client import Client

        super().__init__(Path(tempfile.mkdtemp(prefix="orch-cmp-prefect-")))
        # Prefect's server answers 503 while its SQLite database is locked, and Prefect's own client
        # retries those (PREFECT_CLIENT_MAX_RETRIES); so do the calls that set up and drive the
        # benchmark. The create-run API figure uses strict_api and counts them as errors.
        self.strict_api = self.api
        self.api = Client(self.api_base, timeout=60.0, retry_seconds=60.0)
        self.home = self.tmp / "home"
        self.env = prefect_env(self.home, self.api_base)

    def fresh_database(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)

    @property
    def database_file(self) -> Path:
        return self.home / "prefect.db"

    def server_argv(self) -> list[str]:
        return [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]

    def cli(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run([str(PREFECT), *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=180, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done.stdout

    def setup(self) -> None:
        self.fresh_database()
        self.start_server()
        for pool in ("bench", "idle"):
            self.cli("work-pool", "create", pool, "--type", "process")
        self.flows = self.tmp / "flows"
        self.flows.mkdir()
        for name in ("flows.py", "deploy.py"):
            shutil.copy(FLOWS / name, self.flows / name)
        compile_flows(self.flows, PY)
        done = subprocess.run([str(PY), "deploy.py"], cwd=self.flows, env=self.env, capture_output=True, text=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"deploying the Prefect flows failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        self.deployments = json.loads(done.stdout.strip().splitlines()[-1])
        self.start_worker()

    def workers_online(self) -> set[str]:
        return {w["name"] for w in self.api.request("POST", "/work_pools/bench/workers/filter", body={})
                if w.get("status") == "ONLINE"}

    def start_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            raise RuntimeError("worker already running")
        known = self.workers_online()
        self.worker = self.spawn("worker", [str(PREFECT), "worker", "start", "--pool", "bench", "--type", "process",
                                            "--limit", "8"], cwd=self.flows)
        wait_until(f"{self.label}: an ONLINE worker", lambda: self.workers_online() - known, 120,
                   alive=self.check_alive, ignore=NOT_YET)

    def create_run(self, deployment: str, *, strict: bool = False) -> str:
        api = self.strict_api if strict else self.api
        return str(api.request("POST", f"/deployments/{self.deployments[deployment]}/create_flow_run",
                               body={})["id"])

    def read_run(self, run_id: str) -> dict[str, Any]:
        run = self.api.request("GET", f"/flow_runs/{run_id}")
        pid = run.get("infrastructure_pid")
        return {"state": run["state"]["type"], "start": parse_ts(run["start_time"]), "end": parse_ts(run["end_time"]),
                "pid": int(str(pid).rsplit(":", 1)[-1]) if pid else None}

    def cancel(self, run_id: str) -> None:
        """What ``prefect flow-run cancel`` does: propose CANCELLING."""
        result = self.api.request("POST", f"/flow_runs/{run_id}/set_state",
                                  body={"state": {"type": "CANCELLING", "name": "Cancelling"}})
        if result.get("status") != "ACCEPT":
            raise RuntimeError(f"Prefect refused to cancel run {run_id}: {result}")

    def count_final(self, deployment: str) -> int:
        return int(self.api.request("POST", "/flow_runs/count", body={
            "deployments": {"id": {"any_": [self.deployments[deployment]]}},
            "flow_runs": {"state": {"type": {"any_": FINAL}}}}))


def preload_schedules(side: PrefectSide, count: int, every: float) -> float:
    """``count`` deployments with one interval schedule each, through the API of a server whose
    scheduler is off (so nothing is scheduled yet); the server is stopped afterwards. Returns seconds."""
    import time

    from orchestrator.client import Client

    side.fresh_database()
    side.start_server(env={**side.env, "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"})
    began = time.perf_counter()
    side.cli("work-pool", "create", "bench", "--type", "process")
    # Prefect answers 503 when SQLite is busy; its own client retries those, so this one does too.
    api = Client(side.api_base, timeout=60.0, retry_seconds=60.0)
    flow_id = api.request("POST", "/flows/", body={"name": "bench"})["id"]
    for i in range(count):
        api.request("POST", "/deployments/", body={
            "name": f"d{i:05d}", "flow_id": flow_id, "work_pool_name": "bench", "entrypoint": "flows.py:noop",
            "schedules": [{"schedule": {"interval": every}, "active": True}]})
    api.close()
    seconds = time.perf_counter() - began
    side.stop_process(side.server)
    side.server = None
    return seconds
