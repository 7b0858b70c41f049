"""A flow called inside a tracked flow run is a flow run of its own, as in Prefect 3: a task run
named after the flow stands for the call in the caller's run and ends in the child's state, the
child run points at it (``parent_task_run_id``), its logs and task runs are its own, and a failing
child raises in its caller as a plain call would. Inside a directly called flow (sync and async) and
inside a deployment's run started by a worker. ``orch flow-run inspect`` shows parent and children;
``orch flow-run ls`` names each run's flow (``GET /api/flows``). Real programs, a real server, SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from tests.conftest import LiveServer, live_server
from tests.harness import clean_env, wait_until
from tests.worker_runs import log_text, process_pool_run
from workers.process import ProcessWorker

pytestmark = pytest.mark.integration


def run_script(tmp_path: Path, source: str, api_url: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(source)
    variables = {**clean_env(), **({"ORCH_API_URL": api_url} if api_url else {}), **env}
    return subprocess.run([sys.executable, str(script)], env=variables, capture_output=True, text=True,
                          timeout=120, check=False)


def orch(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], capture_output=True, text=True,
                          env={**clean_env(), "ORCH_API_URL": api_url, "COLUMNS": "200"}, timeout=60, check=False)


def runs_by_flow(client: Any) -> dict[str, schemas.FlowRun]:
    """Each run by its flow's name (one run per flow in these tests)."""
    runs = client.list_flow_runs().items
    names = {flow.id: flow.name for flow in client.read_flows(run.flow_id for run in runs)}
    by_flow = {names[run.flow_id]: run for run in runs}
    assert len(by_flow) == len(runs), runs
    return by_flow


SYNC_PARENT = '''\
from orchestrator import flow, get_run_logger, task


@task
def double(x: int) -> int:
    return 2 * x


@flow(log_prints=True)
def child(x: int) -> int:
    print("printed by the child")
    return double(x)


@flow
def bad() -> None:
    get_run_logger().info("about to fail")
    raise ValueError("boom in the child")


@flow(log_prints=True)
def parent() -> int:
    print("printed by the parent")
    value = child(3)
    try:
        bad()
    except ValueError as error:
        print(f"caught {error}")
    return value + double(1)


print(parent())
'''


def test_a_flow_called_in_a_directly_called_flow_is_a_subflow_run(api: LiveServer, tmp_path: Path) -> None:
    done = run_script(tmp_path, SYNC_PARENT, api.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8"] and "[orchestrator]" not in done.stderr, done.stderr
    client = api.client()
    runs = runs_by_flow(client)
    assert sorted(runs) == ["bad", "child", "parent"]
    parent, child, bad = runs["parent"], runs["child"], runs["bad"]
    assert (parent.state.type, child.state.type, bad.state.type) == ("COMPLETED", "COMPLETED", "FAILED")
    assert child.result == 6 and bad.state.message == "ValueError: boom in the child"
    assert all(run.deployment_id is None for run in runs.values())

    # The caller's run has a task run per call, named after the flow, ending in the child's state.
    calls = {t.name: t for t in client.read_task_runs(parent.id)}
    assert {name: t.state_type for name, t in calls.items()} == {
        "child-0": "COMPLETED", "bad-0": "FAILED", "double-0": "COMPLETED"}
    assert calls["child-0"].task_name == "child"
    # The child's task runs are its own.
    assert [(t.name, t.state_type) for t in client.read_task_runs(child.id)] == [("double-0", "COMPLETED")]

    family = client.read_flow_run_relatives(parent.id)
    assert (family.parent, family.parent_task_run_id) == (None, None)
    assert [run.id for run in family.children] == [child.id, bad.id]
    for run, call in ((child, "child-0"), (bad, "bad-0")):
        up = client.read_flow_run_relatives(run.id)
        assert up.parent is not None and up.parent.id == parent.id and up.children == []
        assert up.parent_task_run_id == calls[call].id

    # Each run's logs are its own; the caller's says which runs it created.
    parent_logs, child_logs, bad_logs = (log_text(client, run.id) for run in (parent, child, bad))
    assert "printed by the child" in child_logs and "printed by the child" not in parent_logs
    assert "about to fail" in bad_logs and "boom in the child" in bad_logs and "about to fail" not in parent_logs
    assert "Finished in state Failed" in bad_logs and "Finished in state Failed" not in parent_logs
    assert f"Created subflow run '{child.name}' for flow 'child'" in parent_logs
    assert "printed by the parent" in parent_logs and "caught boom in the child" in parent_logs
    assert "printed by the parent" not in child_logs

    # orch flow-run inspect shows both ways.
    shown = orch(api.url, "flow-run", "inspect", str(parent.id))
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["parent_flow_run"] is None
    assert [(r["id"], r["state"]) for r in data["subflow_runs"]] == [(str(child.id), "Completed"),
                                                                     (str(bad.id), "Failed")]
    data = json.loads(orch(api.url, "flow-run", "inspect", str(bad.id)).stdout)
    assert data["parent_flow_run"] == {"id": str(parent.id), "name": parent.name, "state": "Completed"}
    assert data["parent_task_run_id"] == str(calls["bad-0"].id) and data["subflow_runs"] == []

    # So does the UI's run page: the children listed, the parent linked.
    parent_page, child_page = (ui_page(api, f"/runs/{run.id}") for run in (parent, bad))
    children = parent_page[parent_page.index('id="subflow-runs"'):]
    assert f'href="/runs/{child.id}"' in children and f'href="/runs/{bad.id}"' in children
    assert 'id="run-parent"' not in parent_page and 'id="subflow-runs"' not in child_page
    assert f'<dd id="run-parent"><a href="/runs/{parent.id}">{parent.name}</a>' in child_page


def ui_page(api: LiveServer, path: str) -> str:
    import urllib.request

    asked = urllib.request.Request(api.url.removesuffix("/api") + path, headers={"Accept": "text/html"})  # a browser's
    with urllib.request.urlopen(asked, timeout=30) as answer:
        return answer.read().decode()


ASYNC_PARENT = '''\
import asyncio

from orchestrator import flow


@flow
async def async_child(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


@flow
def sync_child(x: int) -> int:
    return x * 10


@flow
async def async_parent() -> int:
    return await async_child(1) + sync_child(2)


print(asyncio.run(async_parent()))
'''


def test_an_async_flow_calls_subflows_sync_and_async(api: LiveServer, tmp_path: Path) -> None:
    done = run_script(tmp_path, ASYNC_PARENT, api.url)
    assert done.returncode == 0 and done.stdout.split() == ["22"], done.stderr
    client = api.client()
    runs = runs_by_flow(client)
    assert {name: run.state.type for name, run in runs.items()} == {
        "async-parent": "COMPLETED", "async-child": "COMPLETED", "sync-child": "COMPLETED"}  # named as in Prefect
    family = client.read_flow_run_relatives(runs["async-parent"].id)
    assert [run.id for run in family.children] == [runs["async-child"].id, runs["sync-child"].id]
    assert sorted(t.name for t in client.read_task_runs(runs["async-parent"].id)) == ["async-child-0",
                                                                                      "sync-child-0"]


def test_without_an_api_a_flow_in_a_flow_is_a_plain_call(tmp_path: Path) -> None:
    done = run_script(tmp_path, SYNC_PARENT, None)
    assert done.returncode == 0 and done.stdout.split() == ["8"], done.stderr
    assert "[orchestrator]" not in done.stderr and "Created subflow run" not in done.stderr


DEPLOYED = '''\
from orchestrator import flow, get_run_logger


@flow
def inner(word: str) -> str:
    get_run_logger().info("inner says %s", word)
    return word.upper()


@flow
def outer(word: str = "hi") -> str:
    get_run_logger().info("outer starts")
    return inner(word) + "!"
'''


def deployed_subflow(api: LiveServer, tmp_path: Path, client: Any) -> tuple[schemas.FlowRun, schemas.FlowRun]:
    """Run ``outer`` (which calls ``inner``) through a process worker; both runs as they ended."""
    pool, _, run = process_pool_run(client, tmp_path, DEPLOYED, "outer", parameters={"word": "yes"})
    worker = ProcessWorker(client, pool=pool, name=f"w-{uuid.uuid4().hex[:6]}", api_url=api.url, prewarm=False)
    try:
        worker.handle(run.id)
    finally:
        worker.stop()
    outer = client.read_flow_run(run.id)
    family = client.read_flow_run_relatives(run.id)
    assert outer.state.type == "COMPLETED" and outer.result == "YES!", outer.state
    assert len(family.children) == 1, family
    return outer, family.children[0]


def test_a_flow_called_in_a_deployments_run_is_a_subflow_run(api: LiveServer, tmp_path: Path) -> None:
    client = api.client()
    outer, inner = deployed_subflow(api, tmp_path, client)
    assert (inner.state.type, inner.result, inner.deployment_id) == ("COMPLETED", "YES", None)
    assert inner.parameters == {"word": "yes"}
    (call,) = client.read_task_runs(outer.id)
    assert (call.name, call.task_name, call.state_type) == ("inner-0", "inner", "COMPLETED")
    assert client.read_flow_run_relatives(inner.id).parent.id == outer.id  # type: ignore[union-attr]
    assert "inner says yes" in log_text(client, inner.id)
    assert "inner says yes" not in log_text(client, outer.id) and "outer starts" in log_text(client, outer.id)


SLEEPY = '''\
import time

from orchestrator import flow


@flow
def nap() -> None:
    print("napping", flush=True)
    time.sleep(120)


@flow
def waits() -> None:
    nap()
'''


def test_a_subflow_run_is_cancelled_with_its_callers_process(api: LiveServer, tmp_path: Path) -> None:
    """SIGTERM to a deployment's flow-run process (its cancellation) while a subflow runs: the
    subflow run ends CANCELLED, as does the task run standing for it, not CRASHED."""
    client = api.client()
    pool, flows, run = process_pool_run(client, tmp_path, SLEEPY, "waits")
    worker = ProcessWorker(client, pool=pool, name="cancelling", api_url=api.url, prewarm=False)
    env = worker.run_environment(run.id, client.claim_flow_run(run.id, worker.name, pool))
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.engine"], cwd=flows,
                               env={**clean_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        child = wait_until("the subflow run to run", lambda: next(
            (c for c in client.read_flow_run_relatives(run.id).children if c.state.type == "RUNNING"), None), 60, 0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    ended = client.read_flow_run(child.id)
    assert (ended.state.type, ended.state.message) == ("CANCELLED", "The parent flow run was cancelled."), output
    (call,) = client.read_task_runs(run.id)
    assert (call.name, call.state_type) == ("nap-0", "CANCELLED")


KEYED = "bootstrap-admin-key-0123456789"


def test_with_keys_a_runs_own_key_creates_its_subflow_runs(sqlite_url: str, tmp_path: Path) -> None:
    """The flow-run process holds only its run's own key (no scope): it may create that run's
    subflow runs, as it reports its run."""
    from orchestrator.schemas.api_keys import ApiKeyCreate, Scope
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, api_url="http://unused/api",
                        server_api_keys=KEYED)
    with live_server(settings, broker=MemoryBroker()) as server:
        admin = server.client(api_key=KEYED)
        _, inner = deployed_subflow(server, tmp_path, admin)  # the flow-run process gets its run's key only
        assert inner.state.type == "COMPLETED"
        other = admin.create_api_key(ApiKeyCreate(name="reader", scopes=[Scope.READ])).secret
        refused = server.client(api_key=other)
        with pytest.raises(Exception, match="scope"):
            refused.create_subflow_run(inner.id, schemas.SubflowRunCreate(flow_name="x", parent_task_run_id=uuid.uuid4()))


def test_flows_are_read_by_id_and_runs_listed_with_their_flows_name(api: LiveServer, tmp_path: Path) -> None:
    done = run_script(tmp_path, ASYNC_PARENT, api.url)
    assert done.returncode == 0, done.stderr
    client = api.client()
    runs = client.list_flow_runs().items
    flows = client.read_flows([run.flow_id for run in runs] + [uuid.uuid4()])  # an unknown id is left out
    assert [flow.name for flow in flows] == ["async-child", "async-parent", "sync-child"]
    one = runs[0]
    status, body = api.raw("GET", f"/flows/{one.flow_id}")
    assert status == 200 and body["id"] == str(one.flow_id)
    missing = uuid.uuid4()
    assert api.raw("GET", f"/flows/{missing}") == (404, {"detail": f"flow {missing} not found", "code": "not_found"})
    assert api.raw("GET", "/flows/not-an-id")[0] == 422
    # A run that does not exist has no relatives, nor can it call a subflow.
    assert api.raw("GET", f"/flow_runs/{missing}/relatives")[0] == 404
    body = {"flow_name": "x", "parent_task_run_id": str(uuid.uuid4())}
    assert api.raw("POST", f"/flow_runs/{missing}/subflow_runs", body) == (
        404, {"detail": f"flow run {missing} not found", "code": "not_found"})
    assert api.raw("POST", f"/flow_runs/{one.id}/subflow_runs", {"flow_name": "x"})[0] == 422  # no task run named

    listed = orch(api.url, "flow-run", "ls")
    assert listed.returncode == 0, listed.stderr
    for run in runs:
        (row,) = [line for line in listed.stdout.splitlines() if str(run.id) in line]
        name = next(flow.name for flow in flows if flow.id == run.flow_id)
        assert f" {name} " in row and "called directly" in row, row
