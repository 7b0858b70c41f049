"""Async flows, tasks and versions on the real worker path: a live API, ``ProcessWorker.handle``
starting ``python -m orchestrator.engine`` for a deployment's run, as in production.

The Prefect-style file (tests/fixtures/prefect_flows.py) runs with only its import line changed."""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_engine_exit import RecordingWorker
from tests.worker_runs import deploy, log_text, new_run, running_handle, wait_for

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration

PREFECT_FLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "prefect_flows.py"
IMPORT_LINE = "from prefect import flow, get_run_logger, task"

MORE_FLOWS = '''\
import asyncio
from pathlib import Path

from orchestrator import flow, task


@task(timeout_seconds=0.5)
async def too_slow() -> None:
    await asyncio.sleep(60)


@flow
async def task_times_out() -> None:
    await too_slow()


@flow(timeout_seconds=1)
async def flow_times_out() -> None:
    await asyncio.sleep(60)


@flow(timeout_seconds=1)
def sync_flow_times_out() -> None:
    import time
    time.sleep(60)


@flow(validate_parameters=False)
def takes_what_it_is_given(x: int) -> str:
    return type(x).__name__


@flow
def takes_an_int(x: int) -> str:
    return type(x).__name__


@task
def sleeps(seconds: float) -> None:
    import time
    time.sleep(seconds)


@flow
async def waits_to_be_cancelled(started: str, cancelled: str) -> None:
    sleeps.submit(600)
    Path(started).write_text("started")
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        Path(cancelled).write_text("the coroutine was cancelled")
        raise


@flow
def sync_waits_to_be_cancelled(started: str, cancelled: str) -> None:
    Path(started).write_text("started")
    try:
        sleeps(600)
    finally:
        Path(cancelled).write_text("the task was interrupted")
'''


@pytest.fixture
def setup(worker_api: Any, tmp_path: Path) -> Any:
    from orchestrator import schemas

    flows = tmp_path / "task-flows"
    flows.mkdir()
    source = PREFECT_FLOWS.read_text()
    assert source.count(IMPORT_LINE) == 1
    prefect_style = source.replace(IMPORT_LINE, "from orchestrator import flow, get_run_logger, task")
    (flows / "flows.py").write_text(f"{prefect_style}\n\n{MORE_FLOWS}")
    client = worker_api.client()
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    worker = RecordingWorker(client, pool=pool, name=f"w-{uuid.uuid4().hex[:6]}", api_url=worker_api.url,
                           prewarm=False, cancel_grace_seconds=60)
    yield client, pool, flows, worker
    worker.stop()


def run_to_the_end(setup: Any, function: str, **parameters: Any) -> Any:
    client, pool, flows, worker = setup
    run = new_run(client, deploy(client, pool, flows, function, {}), parameters=parameters)
    worker.handle(run.id)  # returns once the process has exited and the run is settled
    return client.read_flow_run(run.id)


def test_a_prefect_style_sync_flow_records_its_tasks_with_versions_states_and_retries(setup: Any) -> None:
    client = setup[0]
    done = run_to_the_end(setup, "sync_pipeline", n=3)

    assert done.state.type == "COMPLETED", done.state
    assert done.result == {"total": 6, "fetched": 50, "flaky": "sync after 3 attempts"}
    assert (done.flow_version, done.name) == ("1.4", "sync-3")  # @flow(version=), flow_run_name
    task_runs = {t.name: t for t in client.read_task_runs(done.id)}
    assert set(task_runs) == {"double-0", "double-1", "double-2", "fetch-0", "flaky-0"}
    for name in ("double-0", "double-1", "double-2"):
        assert (task_runs[name].task_name, task_runs[name].version, task_runs[name].tags) == ("double", "2.0", ["math"])
        assert (task_runs[name].state_type, task_runs[name].run_count, task_runs[name].max_retries) == ("COMPLETED", 1, 1)
    flaky = task_runs["flaky-0"]
    assert (flaky.state_type, flaky.run_count, flaky.max_retries) == ("COMPLETED", 3, 3)
    assert re.fullmatch(r"[0-9a-f]{12}", task_runs["fetch-0"].version or "")  # no version=: a hash of the source
    for task_run in task_runs.values():
        assert task_run.start_time is not None and task_run.end_time is not None
        assert task_run.start_time <= task_run.end_time
    logs = {(entry.name, entry.message) for entry in client.read_logs(done.id)}
    assert ("orchestrator.task_run", "doubling 2") in logs  # the task's log_prints
    assert ("orchestrator.flow_run", "starting with n=3") in logs
    assert ("orchestrator.flow_run", "hook: prefect-style-sync completed=True") in logs


def test_an_async_flow_returns_its_real_result_and_calls_sync_and_async_tasks(setup: Any) -> None:
    client = setup[0]
    done = run_to_the_end(setup, "async_pipeline", n=3)

    assert done.state.type == "COMPLETED", done.state
    assert done.state.message is None  # not "result of type coroutine is not JSON"
    assert done.result == {"values": [0, 10, 20], "doubled": 60, "mapped": [0, 10, 20]}
    assert re.fullmatch(r"[0-9a-f]{12}", done.flow_version or "")
    names = sorted(t.name for t in client.read_task_runs(done.id))
    assert names == ["double-30", "fetch-0", "fetch-1", "fetch-2", "fetch-3", "fetch-4", "fetch-5"]
    assert all(t.state_type == "COMPLETED" for t in client.read_task_runs(done.id))
    assert "gathered [0, 10, 20]" in log_text(client, done.id).splitlines()


@pytest.mark.parametrize(("function", "received"), [("takes_an_int", "int"), ("takes_what_it_is_given", "str")])
def test_validate_parameters_false_passes_a_runs_parameters_as_they_are(setup: Any, function: str,
                                                                       received: str) -> None:
    done = run_to_the_end(setup, function, x="5")
    assert (done.state.type, done.result) == ("COMPLETED", received)


@pytest.mark.parametrize(("function", "message"), [
    ("task_times_out", "task 'too_slow' exceeded its timeout of 0.5s"),
    ("flow_times_out", "flow 'flow-times-out' exceeded its timeout of 1s"),
    ("sync_flow_times_out", "flow 'sync-flow-times-out' exceeded its timeout of 1s"),
])
def test_timeouts_reach_async_and_sync_code(setup: Any, function: str, message: str) -> None:
    client = setup[0]
    done = run_to_the_end(setup, function)

    assert done.state.type == "FAILED"
    assert done.state.message == f"RunTimeout: {message}"
    assert (done.end_time - done.start_time).total_seconds() < 30  # not the 60 s it would sleep
    if function == "task_times_out":
        [task_run] = client.read_task_runs(done.id)
        assert (task_run.state_type, task_run.state_message) == ("FAILED", f"RunTimeout: {message}")


@pytest.mark.parametrize(("function", "outcome"), [
    ("waits_to_be_cancelled", "the coroutine was cancelled"),
    ("sync_waits_to_be_cancelled", "the task was interrupted"),
])
def test_cancelling_a_run_stops_its_flow_and_records_its_task_runs_cancelled(setup: Any, tmp_path: Path,
                                                                           function: str, outcome: str) -> None:
    client, pool, flows, worker = setup
    started, cancelled = tmp_path / "started", tmp_path / "cancelled"
    run = new_run(client, deploy(client, pool, flows, function, {}),
                  parameters={"started": str(started), "cancelled": str(cancelled)})
    handling = threading.Thread(target=worker.handle, args=(run.id,), daemon=True)
    handling.start()
    running_handle(worker, run.id)
    wait_for("the flow to start", started.exists, 60, 0.01)
    assert client.cancel_flow_run(run.id).state.type == "CANCELLING"
    worker.cancel(run.id)  # what the worker's cancellation channel does: SIGTERM, SIGKILL after the grace
    handling.join(90)

    assert not handling.is_alive()
    [exited] = worker.exits
    assert exited.exit_code == 143  # the process's own exit on SIGTERM, not the SIGKILL after the grace
    assert client.read_flow_run(run.id).state.type == "CANCELLED"
    assert cancelled.read_text() == outcome
    [task_run] = client.read_task_runs(run.id)
    assert (task_run.name, task_run.state_type) == ("sleeps-0", "CANCELLED")


STANDALONE = '''\
import asyncio

from orchestrator import task

attempts = []


@task(retries=2, tags=["etl"])
def flaky(x: int) -> int:
    attempts.append(x)
    if len(attempts) < 3:
        raise ValueError("not yet")
    return x * 10


@task
async def double(x: int) -> int:
    return 2 * x


print(flaky(1), asyncio.run(double(2)), double.map([3, 4]).result(), flush=True)
'''


def run_script(tmp_path: Path, text: str, env: dict[str, str]) -> Any:
    import subprocess
    import sys

    from tests.harness import clean_env

    script = tmp_path / "standalone.py"
    script.write_text(text)
    return subprocess.run([sys.executable, str(script)], env={**clean_env(), **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_tasks_called_outside_a_flow_are_recorded_when_an_api_is_set(api: Any, tmp_path: Path) -> None:
    """A script calling tasks, no flow: each call, retry included, is a task run the API has once the
    script has exited (what was queued is sent at exit)."""
    done = run_script(tmp_path, STANDALONE, {"ORCH_API_URL": api.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10 4 [6, 8]"
    runs = {t.name: t for t in api.client().list_task_runs_outside_flows()}
    assert sorted(runs) == ["double-0", "double-1", "double-2", "flaky-0"]
    flaky = runs["flaky-0"]
    assert (flaky.state_type, flaky.run_count, flaky.max_retries, flaky.tags) == ("COMPLETED", 3, 2, ["etl"])
    assert all(t.flow_run_id is None and t.state_name == "Completed" for t in runs.values())
    import json
    import subprocess

    from tests.harness import ORCH_MODULE, clean_env

    shown = subprocess.run([*ORCH_MODULE, "task-run", "ls", "--task", "flaky", "--json"], capture_output=True,
                           text=True, env={**clean_env(), "ORCH_API_URL": api.url}, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert [(t["name"], t["run_count"]) for t in json.loads(shown.stdout)] == [("flaky-0", 3)]
    # The table names the column as docs/cli.md does: "3 of 3" is attempts (it said "runs").
    table = subprocess.run([*ORCH_MODULE, "task-run", "ls", "--task", "flaky"], capture_output=True, text=True,
                           env={**clean_env(), "ORCH_API_URL": api.url}, timeout=60, check=False)
    header, row = (line for line in table.stdout.splitlines() if "flaky" in line or "attempts" in line)
    assert header.split()[1::2][:6] == ["name", "task", "version", "state", "attempts", "start"], table.stdout
    assert " 3 of 3 " in row, table.stdout


def test_tasks_outside_a_flow_run_without_a_server(tmp_path: Path) -> None:
    """No ORCH_API_URL: nothing is sent, nothing waits. An unreachable one: the tasks run all the
    same; the shipper says once per batch that it could not record them."""
    alone = run_script(tmp_path, STANDALONE, {})
    assert alone.returncode == 0 and alone.stdout.strip() == "10 4 [6, 8]" and alone.stderr == "", alone
    unreachable = run_script(tmp_path, STANDALONE, {"ORCH_API_URL": "http://127.0.0.1:9/api"})
    assert unreachable.returncode == 0 and unreachable.stdout.strip() == "10 4 [6, 8]", unreachable
    assert "could not record" in unreachable.stderr and "Traceback" not in unreachable.stderr, unreachable.stderr
