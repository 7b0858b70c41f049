"""The fault suite's own PostgreSQL cluster and Redis server, so a test can stop and restart them
with their own commands (pg_ctl, redis-server) without disturbing anything else on the machine."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, missing_service
from tests.e2e.conftest import Stack
from tests.harness import FINAL, postgres_env, wait_until

# Fast liveness for tests: a heartbeat every 0.5 s, silent after 1.5 s.
FAST = {
    "ORCH_WORKER_HEARTBEAT_SECONDS": "0.5",
    "ORCH_REAPER_INTERVAL_SECONDS": "0.5",
    "ORCH_DISPATCHER_REDISPATCH_SECONDS": "2",
    "ORCH_CANCELLING_TIMEOUT_SECONDS": "5",
    "ORCH_WORKER_CANCEL_GRACE_SECONDS": "2",
}


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            missing_service("redis-server")
        self.process = subprocess.Popen(
            [str(exe), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_until(f"the private redis-server on port {self.port}", client.ping, 20, 0.05,
                       ignore=(redis.ConnectionError,))
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def flushall(self) -> None:
        import redis

        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


class PrivatePostgres:
    """An initdb'd cluster owned by the postgres user, on a free port."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins or shutil.which("runuser") is None:
            missing_service("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) and runuser")
        self.bin = Path(bins[-1])
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="orch-faults-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.init()
    pg.start()
    yield pg
    try:
        pg.stop()
    finally:
        shutil.rmtree(pg.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    r.start()
    yield r
    r.stop()


class FaultStack(Stack):
    """A Stack with helpers to wait on runs and find their processes."""

    def create_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        dep = self.get(f"/deployments/name/{deployment}")
        return str(self.post(f"/deployments/{dep['id']}/runs", {"parameters": parameters})["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{run_id}"))

    def wait_run(self, run_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        """Bounded wait on the run's state as the API reports it (the API may be down on purpose)."""
        seen: list[dict[str, Any]] = []

        def matches() -> dict[str, Any] | None:
            seen[:] = [self.run(run_id)]
            return seen[0] if predicate(seen[0]) else None

        return wait_until(f"run {run_id} to match", matches, timeout, 0.02, ignore=(OSError,),
                          describe=lambda: f"last seen: {seen[0] if seen else None}\n{self.all_logs()}")

    def wait_final(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_run(run_id, lambda r: r["state"]["type"] in FINAL, timeout)

    def states(self, run_id: str) -> list[str]:
        return [f"{s['type']}/{s['name']}" for s in self.get(f"/flow_runs/{run_id}/states")]

    def flow_pid(self, run_id: str) -> int:
        run = self.wait_run(run_id, lambda r: bool(r.get("infrastructure_id")))
        return int(run["infrastructure_id"].rsplit(":", 1)[1])


@pytest.fixture
def fault_stack(tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis) -> Iterator[FaultStack]:
    database = f"faults_{os.urandom(4).hex()}"
    private_redis.flushall()
    stack = FaultStack(tmp_path, {**postgres_env(private_postgres.create_database(database), private_redis.url),
                                  **FAST})
    (stack.project / "flows.py").write_text(FLOWS)
    yield stack
    stack.stop()


@pytest.fixture(params=["embedded", "postgres+redis"])
def default_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultStack]:
    """A FaultStack with the default liveness settings (heartbeat 10 s, reaper every 5 s), on the
    embedded defaults and on the private PostgreSQL + Redis."""
    env: dict[str, str] = {}
    if request.param == "postgres+redis":
        private_postgres: PrivatePostgres = request.getfixturevalue("private_postgres")
        private_redis: PrivateRedis = request.getfixturevalue("private_redis")
        private_redis.flushall()
        env = postgres_env(private_postgres.create_database(f"faults_{os.urandom(4).hex()}"), private_redis.url)
    stack = FaultStack(tmp_path, env)
    (stack.project / "flows.py").write_text(FLOWS)
    yield stack
    stack.stop()


FLOWS = '''
import os
import pathlib
import time

from orchestrator import flow


def wait_for(path: str) -> None:
    gate = pathlib.Path(path)
    deadline = time.monotonic() + 120
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)


@flow
def blocker(gate: str, marker: str) -> str:
    """Records each execution, then waits until the test opens the gate."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\\n")
    print("waiting for the gate", flush=True)
    wait_for(gate)
    print("gate open", flush=True)
    return "done"


@flow(retries=2, retry_delay_seconds=0.2)
def flaky(counter: str) -> int:
    path = pathlib.Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt
'''


def deploy_all(stack: Stack, pool: str = "local") -> None:
    result = stack.orch("work-pool", "create", pool, "--type", "process")
    assert result.returncode == 0, result.stderr
    code = ("from flows import blocker, flaky\n"
            f"blocker.deploy(name='b', work_pool_name={pool!r})\n"
            f"flaky.deploy(name='f', work_pool_name={pool!r})\n")
    done = stack.python(code)
    assert done.returncode == 0, done.stderr
