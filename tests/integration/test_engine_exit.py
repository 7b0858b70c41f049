"""How a flow-run process ends (orchestrator/runtime/engine.py ``end_process``), with real processes: a live
API, ``ProcessWorker.handle`` starting ``python -m orchestrator.engine`` (fresh or forked by the
fork server), and the cancellation done the way the worker's cancellation channel does it.

The engine leaves with ``os._exit`` once its outcome is reported, skipping the interpreter's
teardown; these tests hold it to what that teardown used to guarantee: every line the flow printed
or logged reaches the API (the last ones sit in the shipper's buffer or, without a newline, in the
stdout tee, when the process is told to stop), atexit handlers run, the flow's non-daemon threads
finish after a normal end, and the exit code tells how the process ended."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.worker_runs import deploy, log_text, new_run, running_handle, wait_for
from workers.base import Infrastructure, InfrastructureResult
from workers.forkserver import ForkServer
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration

# Long enough that only a prompt exit passes: a process that waited for its threads would be
# SIGKILLed after it and report -9, not 143.
GRACE_SECONDS = 60.0
LINES = 300

FLOWS_PY = '''\
import atexit
import logging
import sys
import threading
import time
from pathlib import Path

from orchestrator import flow


@flow
def chatty(marker: str, atexit_file: str, lines: int) -> None:
    atexit.register(lambda: Path(atexit_file).write_text("atexit ran"))
    # A thread that never ends: a cancelled run must not wait for it.
    threading.Thread(target=threading.Event().wait, name="forever", daemon=False).start()
    for i in range(lines):
        print(f"line {i}")
    logging.getLogger("chatty").warning("logged at the end")
    sys.stdout.write("no newline yet")  # held by the stdout tee until the engine flushes it
    Path(marker).write_text("printed everything")
    time.sleep(600)


@flow
def leaves_work(thread_file: str, atexit_file: str) -> str:
    atexit.register(lambda: Path(atexit_file).write_text("atexit ran"))

    def after_the_flow() -> None:
        threading.main_thread().join()  # returns once the interpreter (or the engine) is shutting down
        Path(thread_file).write_text("finished after the flow returned")

    threading.Thread(target=after_the_flow, name="after", daemon=False).start()
    print("done, and no newline", end="")
    return "ok"


@flow
def sleeps(marker: str) -> None:
    print("sleeping")
    Path(marker).write_text("running")
    time.sleep(600)


@flow
def outlives_its_worker() -> str:
    print("printed with nobody reading")
    logging.getLogger("orphan").warning("logged with nobody reading")
    return "fine"
'''


@pytest.fixture
def setup(worker_api: Any, tmp_path: Path) -> Any:
    from orchestrator import schemas

    flows = tmp_path / "exit-flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    client = worker_api.client()
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    return worker_api, client, pool, flows


class RecordingWorker(ProcessWorker):
    """The process worker, keeping what each of its processes' exits looked like."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exits: list[InfrastructureResult] = []

    def wait(self, infrastructure: Infrastructure) -> InfrastructureResult:
        result = super().wait(infrastructure)
        self.exits.append(result)
        return result


def make_worker(setup: Any, prewarm: bool) -> RecordingWorker:
    api, client, pool, _flows = setup
    worker = RecordingWorker(client, pool=pool, name=f"w-{uuid.uuid4().hex[:6]}", api_url=api.url, prewarm=prewarm,
                           cancel_grace_seconds=GRACE_SECONDS)
    if prewarm:  # what start_heartbeat does when serving, without the liveness threads
        worker._forks = ForkServer()
        assert worker._forks.wait_ready(60), "no fork server ready"
    return worker


@pytest.mark.parametrize("prewarm", [False, True], ids=["fresh-process", "forked"])
def test_a_cancelled_run_ships_every_line_printed_before_the_sigterm(setup: Any, tmp_path: Path,
                                                                     prewarm: bool) -> None:
    _api, client, pool, flows = setup
    worker = make_worker(setup, prewarm)
    marker, atexit_file = tmp_path / "marker", tmp_path / "atexit"
    deployment = deploy(client, pool, flows, "chatty", {})
    run = new_run(client, deployment, parameters={"marker": str(marker), "atexit_file": str(atexit_file),
                                                  "lines": LINES})
    handling = threading.Thread(target=worker.handle, args=(run.id,), daemon=True)
    handling.start()
    try:
        running_handle(worker, run.id)
        wait_for("the flow to print its lines", marker.exists, 60, 0.005)
        # What the worker's cancellation channel does: the API says CANCELLING, the worker kills.
        assert client.cancel_flow_run(run.id).state.type == "CANCELLING"
        worker.cancel(run.id)
        handling.join(GRACE_SECONDS + 30)
        assert not handling.is_alive()

        [exited] = worker.exits
        assert exited.exit_code == 143  # its own exit on SIGTERM, not the SIGKILL after the grace
        assert client.read_flow_run(run.id).state.type == "CANCELLED"
        logs = log_text(client, run.id).splitlines()
        assert [line for line in logs if line.startswith("line ")] == [f"line {i}" for i in range(LINES)]
        assert "logged at the end" in logs
        assert "no newline yet" in logs
        assert atexit_file.read_text() == "atexit ran"
    finally:
        worker.stop()


@pytest.mark.parametrize("prewarm", [False, True], ids=["fresh-process", "forked"])
def test_a_completed_run_ships_its_last_output_and_lets_its_threads_and_atexit_finish(
        setup: Any, tmp_path: Path, prewarm: bool) -> None:
    _api, client, pool, flows = setup
    worker = make_worker(setup, prewarm)
    thread_file, atexit_file = tmp_path / "thread", tmp_path / "atexit"
    deployment = deploy(client, pool, flows, "leaves_work", {})
    run = new_run(client, deployment, parameters={"thread_file": str(thread_file), "atexit_file": str(atexit_file)})
    try:
        worker.handle(run.id)  # returns once the process has exited and the run is settled
    finally:
        worker.stop()

    [exited] = worker.exits
    assert exited.exit_code == 0
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == "ok"
    assert "done, and no newline" in log_text(client, run.id).splitlines()
    assert thread_file.read_text() == "finished after the flow returned"
    assert atexit_file.read_text() == "atexit ran"


def test_a_run_whose_worker_is_gone_goes_on_printing_and_ships_its_output(setup: Any) -> None:
    """The worker reads the process's stdout through a pipe; once the worker is dead, a print
    must not fail the flow with BrokenPipeError (the run goes on, its output reaches the API)."""
    api, client, pool, flows = setup
    worker = ProcessWorker(client, pool=pool, name="reader-gone", api_url=api.url, prewarm=False)
    run = new_run(client, deploy(client, pool, flows, "outlives_its_worker", {}))
    client.claim_flow_run(run.id, worker.name, pool)
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.engine"], cwd=flows, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={**os.environ, **worker.run_environment(run.id)})
    assert process.stdout is not None
    process.stdout.close()  # the reading end, as a dead worker leaves it

    assert process.wait(timeout=60) == 0
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == "fine"
    logs = log_text(client, run.id).splitlines()
    assert "printed with nobody reading" in logs and "logged with nobody reading" in logs


def test_a_process_whose_run_ended_without_it_stops(setup: Any, tmp_path: Path) -> None:
    """Its worker gone, a run is cancelled and settled CANCELLED before the process's heartbeat
    answers (the reaper does that when the worker is silent): the heartbeat's answer is already
    final, not CANCELLING, and the process must still stop instead of running its flow on."""
    api, client, pool, flows = setup
    worker = ProcessWorker(client, pool=pool, name="gone-worker", api_url=api.url, prewarm=False)
    marker = tmp_path / "marker"
    run = new_run(client, deploy(client, pool, flows, "sleeps", {}), parameters={"marker": str(marker)})
    client.claim_flow_run(run.id, worker.name, pool)
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.engine"], cwd=flows, stdout=subprocess.DEVNULL,
                               env={**os.environ, **worker.run_environment(run.id)})
    try:
        wait_for("the flow to run", marker.exists, 60, 0.01)
        assert client.cancel_flow_run(run.id).state.type == "CANCELLING"
        from orchestrator.states import StateType

        client.set_flow_run_state(run.id, StateType.CANCELLED, message="settled while its worker was gone",
                                  worker_name=worker.name)
        assert process.wait(timeout=60) == 1  # within one heartbeat hold, not after the flow's 600 s
    finally:
        process.kill()
        process.wait()
    assert client.read_flow_run(run.id).state.type == "CANCELLED"
    assert "sleeping" in log_text(client, run.id).splitlines()
