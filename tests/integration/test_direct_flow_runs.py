"""A flow called directly with ``ORCH_API_URL`` set is a flow run, as in Prefect 3: one run with no
deployment, RUNNING at once, its parameters, task runs, logs and final state; one run through its
retries; CRASHED by the reaper when its program is killed. Without the variable, or with the API
down, the flow runs as before. Real programs, a real server, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from tests.conftest import LiveServer, live_server
from tests.harness import clean_env, wait_until

pytestmark = pytest.mark.integration


def run_script(tmp_path: Path, source: str, api_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(source)
    env = {**clean_env(), **({"ORCH_API_URL": api_url} if api_url else {})}
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def only_run(api: LiveServer) -> schemas.FlowRun:
    runs = api.client().list_flow_runs().items
    assert len(runs) == 1, runs
    return runs[0]


COMPLETES = '''\
import sys
from pathlib import Path

from orchestrator import flow, get_run_logger, task


@task
def double(x: int) -> int:
    get_run_logger().info("doubling %d", x)
    return 2 * x


def on_completion(flow, run, state) -> None:
    Path(sys.argv[1]).write_text(f"{run.id} {state.type}")


@flow(name="direct-ok", flow_run_name="doubling-{n}", log_prints=True, on_completion=[on_completion])
def main(n: int, label: str = "x", thing: object = None) -> int:
    get_run_logger().info("hello from the flow")
    print("printed by the flow")
    return double(n) + double.submit(n).result()


print(main(3, thing=object()))
print("orchestrator.sdk.direct_runs" in sys.modules)
'''


def test_a_direct_call_is_one_completed_run_with_its_parameters_task_runs_and_logs(
        fast_api: LiveServer, tmp_path: Path) -> None:
    done = run_script(tmp_path, COMPLETES, fast_api.url, str(tmp_path / "hook"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["12", "True"]
    assert "[orchestrator]" not in done.stderr, done.stderr
    run = only_run(fast_api)
    client = fast_api.client()
    assert (run.state.type, run.deployment_id, run.work_pool_name, run.worker_name) == ("COMPLETED", None, None, None)
    assert run.name == "doubling-3" and run.parameters["n"] == 3 and run.parameters["label"] == "x"
    assert run.parameters["thing"].startswith("<object object at")  # not JSON: its repr, as Prefect shows it
    assert run.result == 12 and run.run_count == 1 and run.start_time is not None and run.end_time is not None
    assert run.flow_version  # the source's hash, as a deployment's run records it
    assert [s.name for s in client.read_flow_run_states(run.id)] == ["Pending", "Running", "Completed"]
    task_runs = client.read_task_runs(run.id)
    assert sorted((t.name, t.state_type) for t in task_runs) == [("double-0", "COMPLETED"), ("double-1", "COMPLETED")]
    assert client.list_task_runs_outside_flows() == []  # under the run, not outside any flow
    messages = [log.message for log in client.read_logs(run.id)]
    for line in ("hello from the flow", "printed by the flow", "doubling 3", "Finished in state Completed"):
        assert any(line in message for message in messages), (line, messages)
    assert (tmp_path / "hook").read_text() == f"{run.id} COMPLETED"  # the hook had the real run


FAILS_AFTER_RETRIES = '''\
import asyncio
import sys
from pathlib import Path

from orchestrator import flow

attempts = []


@flow(retries=2, retry_delay_seconds=0)
async def flaky(fail_times: int) -> str:
    attempts.append(1)
    if len(attempts) <= fail_times:
        raise ValueError(f"boom {len(attempts)}")
    return "ok"


state = asyncio.run(flaky(int(sys.argv[1]), return_state=True))
print(state.type, len(attempts))
'''


@pytest.mark.parametrize(("fail_times", "final", "names"), [
    (2, "COMPLETED", ["Pending", "Running", "AwaitingRetry", "Running", "AwaitingRetry", "Running", "Completed"]),
    (3, "FAILED", ["Pending", "Running", "AwaitingRetry", "Running", "AwaitingRetry", "Running", "Failed"]),
])
def test_retries_are_one_run_and_a_failure_is_failed_with_the_message(
        fast_api: LiveServer, tmp_path: Path, fail_times: int, final: str, names: list[str]) -> None:
    done = run_script(tmp_path, FAILS_AFTER_RETRIES, fast_api.url, str(fail_times))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [final, "3"]
    run = only_run(fast_api)
    assert run.state.type == final and run.run_count == 3
    assert [s.name for s in fast_api.client().read_flow_run_states(run.id)] == names
    if final == "FAILED":
        assert run.state.message == "ValueError: boom 3"


HANGS = '''\
import sys
import time
from pathlib import Path

from orchestrator import flow, task


@task
def hangs() -> None:
    Path(sys.argv[1]).write_text("started")
    time.sleep(600)


@flow
def stuck() -> None:
    hangs()


stuck()
'''


def test_a_killed_programs_run_is_crashed_by_the_reaper_with_its_open_task_run(
        fast_api: LiveServer, tmp_path: Path) -> None:
    script = tmp_path / "hangs.py"
    script.write_text(HANGS)
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "started")], text=True,
                               env={**clean_env(), "ORCH_API_URL": fast_api.url}, stderr=subprocess.PIPE)
    client = fast_api.client()
    try:
        wait_until("the flow's task to run", lambda: (tmp_path / "started").exists(), timeout=60,
                   alive=lambda: process.poll() is None)
        run = only_run(fast_api)
        wait_until("its task run recorded RUNNING",
                   lambda: [t.state_type for t in client.read_task_runs(run.id)] == ["RUNNING"], timeout=30)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        crashed = wait_until("the run to be CRASHED", lambda: (r := client.read_flow_run(run.id)).state.type
                             == "CRASHED" and r, timeout=60, interval=0.2)
        assert "stopped reporting" in (crashed.state.message or ""), crashed.state
        assert [t.state_type for t in client.read_task_runs(run.id)] == ["CRASHED"]
    finally:
        process.kill()
        process.communicate(timeout=30)


@pytest.mark.parametrize(("source", "raised", "message"), [
    ("from orchestrator import flow\n\n@flow\ndef stop() -> None:\n    raise KeyboardInterrupt\n\nstop()\n",
     "KeyboardInterrupt", "Execution was aborted by an interrupt signal."),
    ("import asyncio\nfrom orchestrator import flow\n\n@flow\nasync def stop() -> None:\n"
     + "    asyncio.current_task().cancel()\n    await asyncio.sleep(5)\n\nasyncio.run(stop())\n",
     "CancelledError", "Execution was cancelled by the runtime environment."),
])
def test_an_interrupt_or_a_cancelled_coroutine_ends_the_run_crashed(fast_api: LiveServer, tmp_path: Path,
                                                                    source: str, raised: str, message: str) -> None:
    done = run_script(tmp_path, source, fast_api.url)
    assert done.returncode != 0 and raised in done.stderr
    run = only_run(fast_api)
    assert (run.state.type, run.state.message) == ("CRASHED", message)


PLAIN = '''\
import sys

from orchestrator import flow, task


@task
def one() -> int:
    return 1


@flow
def plain() -> int:
    return one() + 1


print(plain())
print("orchestrator.sdk.direct_runs" in sys.modules)
'''


def test_without_an_api_url_nothing_is_recorded_nor_loaded(fast_api: LiveServer, tmp_path: Path) -> None:
    done = run_script(tmp_path, PLAIN, None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False"]
    assert fast_api.client().list_flow_runs().items == []
    assert fast_api.client().list_task_runs_outside_flows() == []


def test_with_the_api_down_the_flow_returns_its_value_after_one_warning(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = run_script(tmp_path, PLAIN + "print(plain(), plain())\n", f"http://127.0.0.1:{port}/api")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "True", "2", "2"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("[orchestrator]")]
    assert len(warnings) == 1 and "runs unrecorded" in warnings[0], done.stderr  # one line for the three calls
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("body", "field"), [
    ({}, "flow_name"),
    ({"flow_name": ""}, "flow_name"),
    ({"flow_name": "f", "parameters": "x"}, "parameters"),
    ({"flow_name": "f", "tags": "x"}, "tags"),
    ({"flow_name": "f", "name": "a" * 256}, "name"),
    ({"flow_name": "f", "deployment_id": "x"}, "deployment_id"),
    ({"flow_name": "f", "parameters": {"a": "\u0000"}}, "parameters"),
])
def test_a_bad_body_is_a_422_naming_the_field(fast_api: LiveServer, body: dict[str, Any], field: str) -> None:
    status, answer = fast_api.raw("POST", "/flow_runs", body)
    assert status == 422, answer
    assert field in str(answer), answer
    assert fast_api.client().list_flow_runs().items == []


def test_a_direct_run_is_never_published_nor_claimable(fast_api: LiveServer) -> None:
    from orchestrator.errors import Conflict
    from orchestrator.server.services import slots

    client = fast_api.client()
    created = client.create_direct_flow_run(schemas.DirectFlowRunCreate(flow_name="by-hand", name="mine",
                                                                        parameters={"a": 1}, tags=["t"]))
    run = created.flow_run
    assert (run.name, run.state.type, run.tags, run.deployment_id) == ("mine", "RUNNING", ["t"], None)
    assert created.api_key is None  # an open server: no run key
    with pytest.raises(Conflict):  # RUNNING already, and no deployment to run
        client.claim_flow_run(run.id, "w1")
    client.set_flow_run_state(run.id, "SCHEDULED", name="AwaitingRetry", message="retrying")
    with pytest.raises(Conflict):  # held by its program between retries
        client.claim_flow_run(run.id, "w1")
    fast_api.ctx.dispatcher.step()  # a pass of its own, besides the server's
    with fast_api.ctx.sessions() as session:
        due = slots.due_candidates(session, utcnow() + dt.timedelta(days=1), dt.timedelta(0), 1000)
        assert run.id not in {c.run_id for c in due}
        assert session.get(m.FlowRun, run.id).dispatched_at is None  # never marked published
    assert client.read_flow_run(run.id).state.name == "AwaitingRetry"


def test_a_program_killed_between_retries_has_its_run_crashed_not_given_to_a_worker(sessions: Any) -> None:
    """A held run (AwaitingRetry) whose program went silent: a deployment's run goes back to any
    worker (AwaitingRestart), but no worker can run a directly called flow: CRASHED."""
    from orchestrator.server.reaper import Reaper
    from orchestrator.server.services import direct_runs, transitions

    t0 = utcnow()
    with sessions.begin() as session:
        run = direct_runs.start(session, schemas.DirectFlowRunCreate(flow_name="f"), now=t0)
        transitions.await_retry(session, run.id, when=t0 + dt.timedelta(seconds=5), message="attempt 1 failed")
    reaper = Reaper(sessions, heartbeat_seconds=10, interval_seconds=1, cancelling_timeout_seconds=60)
    reaper.tick(t0 + dt.timedelta(seconds=29))
    with sessions() as session:
        assert session.get(m.FlowRun, run.id).state_name == "AwaitingRetry"
    reaper.tick(t0 + dt.timedelta(seconds=31))
    with sessions() as session:
        lost = session.get(m.FlowRun, run.id)
        assert (lost.state_type, lost.worker_name, lost.dispatched_at) == ("CRASHED", None, None)
        assert lost.state_message.startswith("the program running this directly called flow went silent")


KEYED = "bootstrap-admin-key-0123456789"


@pytest.mark.parametrize("scope", ["run", "read"])
def test_with_keys_a_run_key_records_the_run_and_a_key_without_the_run_scope_leaves_it_unrecorded(
        sqlite_url: str, tmp_path: Path, scope: str) -> None:
    """The program's key needs the ``run`` scope to create the run (as to run a deployment); its
    reports then use the run's own key from the answer, as a claimed run's process does."""
    from orchestrator.schemas.api_keys import ApiKeyCreate, Scope
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, api_url="http://unused/api",
                        server_api_keys=KEYED)
    with live_server(settings, broker=MemoryBroker()) as server:
        admin = server.client(api_key=KEYED)
        key = admin.create_api_key(ApiKeyCreate(name="program", scopes=[Scope(scope)])).secret
        script = tmp_path / "script.py"
        script.write_text(COMPLETES)
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "hook")], capture_output=True, text=True,
                              env={**clean_env(), "ORCH_API_URL": server.url, "ORCH_API_KEY": key}, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0] == "12"
        runs = admin.list_flow_runs().items
        if scope == "read":
            assert runs == [] and "'run' scope" in done.stderr and "runs unrecorded" in done.stderr
            return
        (run,) = runs
        assert run.state.type == "COMPLETED" and len(admin.read_task_runs(run.id)) == 2
        assert any("hello from the flow" in log.message for log in admin.read_logs(run.id))
