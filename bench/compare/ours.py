"""Our side: ``orch server start`` + ``orch worker start --limit 8`` as subprocesses, on PostgreSQL +
Redis (a database and a Redis db of its own, recreated/flushed) or on the embedded defaults (a fresh
ORCH_HOME: SQLite + the SQLAlchemy broker). Default liveness settings (heartbeat 10 s, reaper 5 s)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compare.common import Side, compile_flows
from tests.harness import ORCH_SCRIPT, Stack, clean_env, fresh_postgres

ORCH = ORCH_SCRIPT[0]
MAIN_DB, MAIN_REDIS = "orch_bench_cmp", 13
SCHED_DB, SCHED_REDIS = "orch_bench_cmp_sched", 14
FLOWS_PY = '''"""Our side's flows for bench/compare.py (same as bench/prefect_flows/flows.py)."""
import time

from orchestrator import flow


@flow
def noop() -> None:
    pass


@flow
def sleeper(seconds: float = 600.0) -> None:
    time.sleep(seconds)
'''
LABELS = {"postgres": "ours (PostgreSQL + Redis)", "embedded": "ours (embedded)"}
REPO = Path(__file__).resolve().parents[2]
DROP = ("ORCH_", "PREFECT_")  # neither system's settings of the caller leak into ours


PACKAGES = ("orchestrator", "pools", "workers", "job_templates")


def precompile(tree: Path = REPO) -> None:
    """Byte-compile a checkout (this one unless given), as any installed package is (pip writes .pyc
    files for Prefect's and ours alike; an editable checkout run with PYTHONDONTWRITEBYTECODE=1 would
    otherwise compile our modules again at every process start, ~50 ms and +0.5 MB)."""
    import sys

    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(tree / p) for p in PACKAGES if (tree / p).is_dir())],
                   check=True, capture_output=True, timeout=300)


def pinned_path() -> dict[str, str]:
    """PYTHONPATH pinning the code to this checkout: the system python's editable install may point
    at another clone of the project (a CI check re-installs it)."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def base_env(home: Path, api_url: str) -> dict[str, str]:
    """Our processes' environment, as ``Stack`` builds it, for a server started by hand."""
    return {**clean_env(DROP), "ORCH_HOME": str(home), "ORCH_API_URL": api_url, **pinned_path()}



class OursSide(Side):
    """Our system, started by ``tests.harness.Stack`` as the tests start it."""

    def __init__(self, config: str, *, database: str = MAIN_DB, redis_db: int = MAIN_REDIS) -> None:
        stack = Stack(Path(tempfile.mkdtemp(prefix=f"orch-cmp-{config}-")), pinned_path(), orch=ORCH_SCRIPT,
                      drop=DROP)
        super().__init__(stack.root, stack, stack.port)
        self.stack = stack
        self.config = config
        self.label = LABELS[config]
        self.database, self.redis_db = database, redis_db
        self.home = stack.home

    def fresh_database(self) -> None:
        """Empty database and broker (also between cold starts)."""
        if self.config == "postgres":
            db_url, broker_url = fresh_postgres(self.database, self.redis_db)
            self.env.update(ORCH_DATABASE_URL=db_url, ORCH_BROKER_URL=broker_url)
        else:
            import shutil

            shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True, exist_ok=True)

    @property
    def database_url(self) -> str:
        return self.env.get("ORCH_DATABASE_URL") or f"sqlite:///{self.home / 'orchestrator.db'}"

    def server_argv(self) -> list[str]:
        return self.stack.server_argv()

    def setup(self) -> None:
        from orchestrator import schemas

        self.fresh_database()
        self.start_server()
        flows = self.tmp / "flows"
        flows.mkdir()
        (flows / "flows.py").write_text(FLOWS_PY)
        compile_flows(flows)
        self.flows = flows
        for pool in ("bench", "idle"):
            self.api.request("POST", "/work_pools", body={"name": pool, "type": "process"})
        for key, (flow, name, pool) in {"noop": ("noop", "bench", "bench"), "sleeper": ("sleeper", "bench", "bench"),
                                        "idle": ("noop", "idle", "idle")}.items():
            request = schemas.DeploymentCreate(flow_name=flow, name=name, entrypoint=f"flows.py:{flow}",
                                               path=str(flows), work_pool_name=pool)
            self.deployments[key] = str(self.api.upsert_deployment(request).id)
        self.start_worker()

    def start_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            raise RuntimeError("worker already running")
        if self.worker is not None:
            self.procs.forget(self.worker)  # killed on purpose, now replaced
        self.worker = self.stack.start_worker("bench", "--limit", "8", timeout=120, cwd=self.flows)

    def create_run(self, deployment: str, *, strict: bool = False) -> str:
        api = self.strict_api if strict else self.api
        return str(api.request("POST", f"/deployments/{self.deployments[deployment]}/runs", body={})["id"])

    def read_run(self, run_id: str) -> dict[str, Any]:
        from compare.common import parse_ts

        run = self.api.request("GET", f"/flow_runs/{run_id}")
        infra = run.get("infrastructure_id") or ""
        pid = int(infra.rsplit(":", 1)[1]) if infra.startswith("process:") else None
        return {"state": run["state"]["type"], "start": parse_ts(run["start_time"]), "end": parse_ts(run["end_time"]),
                "pid": pid}

    def cancel(self, run_id: str) -> None:
        self.api.request("POST", f"/flow_runs/{run_id}/cancel")

    def count_final(self, deployment: str) -> int:
        page = self.api.request("GET", "/flow_runs", params={
            "deployment_id": self.deployments[deployment], "limit": 1,
            "state": ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]})
        return int(page["total"])


def preload_schedules(side: OursSide, count: int, every: float) -> None:
    """``count`` deployments with one interval schedule each, written straight into a fresh database
    with the project's services (the server is not running yet, so nothing is scheduled)."""
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate

    side.fresh_database()
    engine = make_engine(side.database_url)
    migrate(engine)
    write_scheduled_deployments(make_sessionmaker(engine), count, {"interval": every})
    engine.dispose()


def write_scheduled_deployments(sessions: Any, count: int, schedule: dict[str, Any], *,
                                parameters: Callable[[int], dict[str, Any]] = lambda i: {}) -> None:
    """Pool ``bench`` and ``count`` deployments ``bench/dNNNNN`` of ``flows.py:noop``, the i-th with
    ``schedule`` and ``parameters(i)``, written with the services as the API writes them, 500 per
    transaction (also bench/scheduler.py's)."""
    from orchestrator import schemas
    from orchestrator.server.services import deployments, work_pools

    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="bench", type="process"))
    for start in range(0, count, 500):
        with sessions.begin() as session:
            for i in range(start, min(count, start + 500)):
                deployments.upsert(session, schemas.DeploymentCreate(
                    flow_name="bench", name=f"d{i:05d}", entrypoint="flows.py:noop", work_pool_name="bench",
                    parameters=parameters(i), schedules=[schedule]))
