"""A live API and flows for worker tests to run, and the helpers that deploy those flows, create
runs and watch them. Test modules load the fixtures (``flow_dir``, ``worker_api``) with
``pytest_plugins = ["tests.worker_runs"]`` and import the helpers by name. PYTEST_DONT_REWRITE: the
helpers raise their own AssertionErrors, and a module imported before pytest_plugins registers it
could not be rewritten anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import wait_until

wait_for = wait_until  # the one bounded wait (tests.harness), by the name these tests use


FLOWS_PY = """\
import os
import time

from orchestrator import flow


@flow
def hello(name: str = "world") -> str:
    with open("/proc/1/cmdline", "rb") as f:  # in a container: its init process
        init = f.read().split(b"\\0")[0].decode()
    print(f"hello {name} host={os.environ.get('HOSTNAME')} init={init}")
    return f"hi {name}"


@flow
def boom() -> None:
    raise ValueError("boom on purpose")


@flow
def exit_code(code: int = 7, delay: float = 0.0) -> None:
    time.sleep(delay)
    print("leaving without a word", flush=True)
    os._exit(code)


@flow
def sleepy(seconds: float = 60.0) -> str:
    print("sleeping", flush=True)
    time.sleep(seconds)
    return "rested"


@flow
def hog(megabytes: int = 1024) -> int:
    print("allocating", flush=True)
    blob = b"x" * (megabytes * 1024 * 1024)  # written, so the pages are really used
    return len(blob)
"""


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    path = tmp_path / "flows"
    path.mkdir()
    (path / "flows.py").write_text(FLOWS_PY)
    return path


@pytest.fixture
def worker_api(tmp_path: Path) -> Iterator[Any]:
    """A live API on SQLite, without background services: the test itself hands runs to
    ``worker.handle(run_id)``, so the claim -> infrastructure -> engine -> report path is all real
    and nothing else (dispatcher, reaper) acts on the runs."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'api.db'}",
                        api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def deploy(client: Any, pool: str, flow_dir: Path, function: str, job_variables: dict[str, Any]) -> Any:
    from orchestrator import schemas

    return client.upsert_deployment(schemas.DeploymentCreate(
        flow_name=function.replace("_", "-"), name="test", entrypoint=f"flows.py:{function}", path=str(flow_dir),
        work_pool_name=pool, job_variables=job_variables, enforce_parameter_schema=False))


def new_run(client: Any, deployment: Any, **fields: Any) -> Any:
    from orchestrator import schemas

    return client.create_flow_run(deployment.id, schemas.FlowRunCreate(**fields))


def process_pool_run(client: Any, tmp_path: Path, flows_py: str, function: str, **fields: Any) -> tuple[str, Path, Any]:
    """A run of ``function`` of ``flows_py`` (written to ``tmp_path/flows/flows.py``), deployed on a new
    process pool: the pool's name, the flows' folder and the run."""
    from orchestrator import schemas

    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "flows.py").write_text(flows_py)
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    return pool, flows, new_run(client, deploy(client, pool, flows, function, {}), **fields)


def log_text(client: Any, run_id: uuid.UUID) -> str:
    return "\n".join(entry.message for entry in client.read_logs(run_id))


def running_handle(worker: Any, run_id: uuid.UUID, timeout: float = 60) -> Any:
    """The infrastructure handle of a run the worker is watching. (BaseWorker keeps it private;
    the cancellation path calls ``kill`` with it, as the tests here do.)"""
    wait_for(f"worker to watch run {run_id}", lambda: run_id in worker.running(), timeout)
    return worker._running[run_id]


def wait_state(client: Any, run_id: uuid.UUID, *types: str, timeout: float = 60) -> Any:
    return wait_for(f"run {run_id} to be {'/'.join(types)}",
                    lambda: (run := client.read_flow_run(run_id)).state.type in types and run, timeout, 0.1)
