"""The process worker's fork server (workers/forkserver.py, orchestrator/runtime/forkserver.py), as
real processes: what a forked flow-run process is given, several runs at once, a server that dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.forks import fork_server_modules, libcrypto_pydantic_loads, ready_fork_server, take_refused_order
from tests.worker_runs import deploy, new_run, running_handle, wait_for
from workers.base import InfrastructureError
from workers.forkserver import COMMAND, ForkedProcess, usable_for
from workers.process import ProcessWorker, _signal_group

pytest_plugins = ["tests.worker_runs"]

FLOWS_PY = '''\
import os
import time
from pathlib import Path

from orchestrator import flow


@flow
def together(folder: str, expected: int, release: str) -> int:
    """Done only once ``expected`` runs have been running at the same time, and ``release`` exists
    (the test has seen each of them running)."""
    Path(folder, str(os.getpid())).write_text("here")
    deadline = time.monotonic() + 60
    while len(list(Path(folder).iterdir())) < expected or not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the other runs never ran at the same time")
        time.sleep(0.01)
    return os.getpid()


@flow
def until_released(marker: str, release: str) -> str:
    Path(marker).write_text("running")
    deadline = time.monotonic() + 60
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return "released"


@flow
def quick() -> int:
    return 7


@flow
def what_it_loaded() -> list[str]:
    import sys

    return sorted(name for name in ("hashlib", "_hashlib", "ssl", "_ssl") if name in sys.modules)


@flow
def what_codecs_it_loaded() -> list[str]:
    import sys

    return sorted(name for name in ("encodings.idna", "stringprep", "unicodedata") if name in sys.modules)


@flow
def what_it_imported() -> list[str]:
    import sys

    return sorted(name for name in sys.modules if name.startswith("orchestrator."))


@flow
def leaves_by_itself() -> None:
    os._exit(0)  # exit code 0, no final state reported
'''


def test_a_forked_process_runs_with_the_environment_and_folder_it_is_given(tmp_path: Path) -> None:
    forks = ready_fork_server()
    try:
        # The engine sees the variable handed over after the server's interpreter had started...
        process = take_refused_order(forks, "given-after-start", str(tmp_path))
        # ... in a session of its own (a kill of its group reaches only the run), not the server's
        assert process.pid != forks.server_pid
        take_refused_order(forks, "again")
    finally:
        forks.close()


def test_a_forked_process_killed_by_a_signal_says_so() -> None:
    forks = ready_fork_server()
    try:
        # killed at once, as the worker's kill does it (its process group may not exist yet)
        process = forks.take({"ORCH_FLOW_RUN_ID": str(uuid.uuid4()), "ORCH_API_URL": "http://127.0.0.1:9/api",
                              "ORCH_WORKER_HEARTBEAT_SECONDS": "10", "ORCH_CLIENT_TIMEOUT_SECONDS": "30"}, None)
        assert process is not None
        _signal_group(process, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert process.stdout is not None
        process.stdout.close()
    finally:
        forks.close()


def test_an_order_the_server_never_answered_is_refused_not_started_again_elsewhere() -> None:
    """Sent, and the server dies before saying which process runs it: the worker cannot know
    whether a child was made, so the run is not handed to a fresh process as well (it would run
    twice); ``take`` raises, and the worker ends the run CRASHED."""
    forks = ready_fork_server()
    try:
        first = forks.server_pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # the order waits in its socket, unread
        outcome: list[object] = []

        def take() -> None:
            try:
                outcome.append(forks.take({"ORCH_FLOW_RUN_ID": "never-started"}, None))
            except InfrastructureError as error:
                outcome.append(error)

        taking = threading.Thread(target=take)
        taking.start()
        wait_for("the order to be sent", lambda: forks._answers, 10, 0.01)
        os.kill(first, signal.SIGKILL)
        taking.join(30)
        [error] = outcome
        assert isinstance(error, InfrastructureError) and "not started again" in str(error)
        wait_for("another fork server", lambda: forks.server_pid not in (None, first) and forks.wait_ready(0), 60, 0.05)
    finally:
        forks.close()


def test_the_fork_server_exits_when_its_worker_goes_away() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = subprocess.Popen(COMMAND, stdin=theirs, stdout=subprocess.DEVNULL)
    theirs.close()
    assert b"ready" in ours.recv(1024)
    ours.close()  # what the kernel does when the worker dies
    assert process.wait(timeout=60) == 0


def test_runs_that_change_interpreter_start_variables_get_a_fresh_process() -> None:
    assert usable_for({"ORCH_FLOW_RUN_ID": "x", "MY_VAR": "1"})
    assert not usable_for({"PYTHONPATH": "/somewhere"})
    assert not usable_for({"LD_PRELOAD": "lib.so"})


@pytest.fixture
def setup(worker_api: Any, tmp_path: Path) -> Any:
    from orchestrator import schemas

    flows = tmp_path / "fork-flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    client = worker_api.client()
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    worker = ProcessWorker(client, pool=pool, name=f"w-{uuid.uuid4().hex[:6]}", api_url=worker_api.url, limit=4)
    worker._forks = ready_fork_server()  # what start_heartbeat does when serving, without the liveness threads
    yield client, pool, flows, worker
    worker.stop()


@pytest.mark.integration
def test_as_many_runs_as_the_limit_start_at_once_each_in_a_forked_process(setup: Any, tmp_path: Path) -> None:
    client, pool, flows, worker = setup
    folder = tmp_path / "together"
    folder.mkdir()
    deployment = deploy(client, pool, flows, "together", {})
    release = tmp_path / "release"
    runs = [new_run(client, deployment, parameters={"folder": str(folder), "expected": worker.limit,
                                                    "release": str(release)})
            for _ in range(worker.limit)]
    threads = [threading.Thread(target=worker.handle, args=(run.id,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    # The runs wait for the release: a run that had already ended would no longer be watched.
    handles = [running_handle(worker, run.id) for run in runs]
    release.write_text("go")
    for thread in threads:
        thread.join(90)
        assert not thread.is_alive()
    assert all(isinstance(handle.process, ForkedProcess) for handle in handles)
    done = [client.read_flow_run(run.id) for run in runs]
    assert [run.state.type for run in done] == ["COMPLETED"] * worker.limit, [run.state for run in done]
    assert sorted(run.result for run in done) == sorted(handle.process.pid for handle in handles)


@pytest.mark.integration
def test_a_forked_run_says_where_it_runs_itself_and_its_worker_sends_no_infrastructure_report(
        setup: Any, tmp_path: Path) -> None:
    """The process sends ``process:<host>:<pid>`` with its lease's first heartbeat (the server keeps
    it while the run has none): the worker's own report, a request and a transaction at the server
    beside the run's RUNNING report, is not sent."""
    client, pool, flows, worker = setup
    reported: list[tuple[Any, ...]] = []
    report = worker.client.report_infrastructure

    def recorded(*args: Any) -> None:
        reported.append(args)
        report(*args)

    worker.client.report_infrastructure = recorded
    folder, release = tmp_path / "alone", tmp_path / "release"
    folder.mkdir()
    release.write_text("go")
    run = new_run(client, deploy(client, pool, flows, "together", {}),
                  parameters={"folder": str(folder), "expected": 1, "release": str(release)})
    worker.handle(run.id)
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.infrastructure_id == f"process:{os.uname().nodename}:{done.result}"
    assert reported == []


@pytest.mark.integration
def test_a_fork_server_that_dies_is_replaced_and_its_running_child_is_not_lost(setup: Any, tmp_path: Path) -> None:
    client, pool, flows, worker = setup
    forks = worker._forks
    marker, release = tmp_path / "marker", tmp_path / "release"
    deployment = deploy(client, pool, flows, "until_released", {})
    run = new_run(client, deployment, parameters={"marker": str(marker), "release": str(release)})
    handling = threading.Thread(target=worker.handle, args=(run.id,), daemon=True)
    handling.start()
    handle = running_handle(worker, run.id)
    assert isinstance(handle.process, ForkedProcess)
    wait_for("the flow to run", marker.exists, 60, 0.01)

    first = forks.server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for("another fork server", lambda: forks.server_pid not in (None, first) and forks.wait_ready(0), 60, 0.05)

    release.write_text("go")  # the orphaned run goes on, reports, and its worker sees it end
    handling.join(90)
    assert not handling.is_alive()
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == "released"

    # the new server serves the next run
    marker.unlink()
    run = new_run(client, deployment, parameters={"marker": str(marker), "release": str(release)})
    worker.handle(run.id)
    assert client.read_flow_run(run.id).state.type == "COMPLETED"


@pytest.mark.integration
def test_a_forked_run_killed_is_crashed_with_the_signal(setup: Any, tmp_path: Path) -> None:
    client, pool, flows, worker = setup
    marker, release = tmp_path / "marker", tmp_path / "release"
    run = new_run(client, deploy(client, pool, flows, "until_released", {}),
                  parameters={"marker": str(marker), "release": str(release)})
    handling = threading.Thread(target=worker.handle, args=(run.id,), daemon=True)
    handling.start()
    handle = running_handle(worker, run.id)
    assert isinstance(handle.process, ForkedProcess)
    wait_for("the flow to run", marker.exists, 60, 0.01)
    os.kill(handle.process.pid, signal.SIGKILL)
    handling.join(90)
    assert not handling.is_alive()
    done = client.read_flow_run(run.id)
    assert done.state.type == "CRASHED"
    assert "killed by signal SIGKILL" in (done.state.message or "")



@pytest.mark.integration
def test_a_forked_run_that_reported_its_final_state_is_not_read_back(setup: Any) -> None:
    """The child said it left nothing to settle (``settled`` in its exit report): the worker skips
    its read of the run after the exit, one request fewer per run."""
    client, pool, flows, worker = setup
    reads: list[uuid.UUID] = []
    read = worker.client.read_flow_run

    def counting(run_id: uuid.UUID) -> Any:
        reads.append(run_id)
        return read(run_id)

    worker.client.read_flow_run = counting  # type: ignore[method-assign]
    run = new_run(client, deploy(client, pool, flows, "quick", {}))
    worker.handle(run.id)
    assert reads == []  # the worker's (the test's own read below goes through the same client)
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED" and done.result == 7


@pytest.mark.integration
def test_a_forked_flow_that_ends_its_process_with_exit_code_0_is_crashed(setup: Any) -> None:
    """Exit code 0 alone is not "settled": a flow that leaves by ``os._exit(0)`` reported nothing,
    and its worker, reading the run back, crashes it (else it would stay RUNNING while the worker
    lives: the reaper leaves a live worker's runs to it)."""
    client, pool, flows, worker = setup
    run = new_run(client, deploy(client, pool, flows, "leaves_by_itself", {}))
    worker.handle(run.id)
    done = client.read_flow_run(run.id)
    assert done.state.type == "CRASHED", done.state
    assert "exited with code 0 without reporting a final state" in (done.state.message or "")


@pytest.mark.integration
def test_a_forked_run_maps_no_libcrypto_before_its_flow_runs(setup: Any) -> None:
    """Nothing on a run's way to its flow (its version, the claim's hand-off, the requests) loads
    ``hashlib`` or ``ssl``, each of which maps libcrypto: neither the fork server nor each child
    holds it (3.3 MB of RSS in the idle fork server; an import of ~4 ms per run in the child), save
    the hashlib a pydantic that imports it itself brings (2.14 does)."""
    client, pool, flows, worker = setup
    run = new_run(client, deploy(client, pool, flows, "what_it_loaded", {}))
    worker.handle(run.id)
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == libcrypto_pydantic_loads()  # no ssl; hashlib only where pydantic loads it


@pytest.mark.integration
def test_a_forked_run_reaches_its_flow_without_the_idna_codec(setup: Any) -> None:
    """The run's requests before its flow (the lease's first beat, RUNNING) look the API's host up
    without the idna codec (``plain_http.lookup_name``): so the fork server need not hold it (~0.2
    MB) for every run to find it loaded, and no run imports it itself (~1 ms of its CPU)."""
    client, pool, flows, worker = setup
    run = new_run(client, deploy(client, pool, flows, "what_codecs_it_loaded", {}))
    worker.handle(run.id)
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert done.result == []


def test_a_forked_run_imports_none_of_our_modules_and_no_wire_models_it_does_not_read(setup: Any) -> None:
    """Everything of ours a run needs before its flow is called was imported by the fork server (a
    child importing a module pays for it in every run), and nothing more: the wire models a run
    never reads (work pools, the broker's info, task runs as the API answers them) stay out of the
    fork server and of every run (``orchestrator.schemas`` imports a module at its first name)."""
    client, pool, flows, worker = setup
    run = new_run(client, deploy(client, pool, flows, "what_it_imported", {}))
    worker.handle(run.id)
    done = client.read_flow_run(run.id)
    assert done.state.type == "COMPLETED", done.state
    assert set(done.result) - set(fork_server_modules()) == set()
    unread = ["orchestrator.schemas.work_pools", "orchestrator.schemas.broker", "orchestrator.schemas.task_runs"]
    assert [name for name in unread if name in done.result] == []
