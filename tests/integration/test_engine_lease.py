"""The flow-run process's connection lease (``services/leases.py``) is open from its start, sent by
its main thread (``RunProcess.open_lease``); the heartbeat thread that beats on starts while the
RUNNING report's answer is awaited, so nothing but the output capture's one reader thread runs
before that report. A real engine process against a real API server, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.client import Client
from orchestrator.errors import ServerUnreachable
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from tests.conftest import LiveServer
from tests.harness import wait_until
from tests.worker_runs import log_text, process_pool_run
from workers.process import ProcessWorker

pytestmark = pytest.mark.integration

HEARTBEAT = 10.0  # the default period: a lapsed heartbeat is one set back by more than this

FLOWS_PY = '''\
import os
import signal
import threading
import time

from orchestrator import flow

# Module code runs as the entrypoint loads: before the RUNNING report.
print("threads before RUNNING:", sorted(t.name for t in threading.enumerate()))
if os.environ.get("KILL_BEFORE_RUNNING"):
    os.kill(os.getpid(), signal.SIGKILL)


@flow
def threads() -> None:
    print("threads in the flow:", sorted(t.name for t in threading.enumerate()))


@flow
def sleeps() -> None:
    time.sleep(120)


@flow
def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # at once: the heartbeat thread has just been started
'''


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A live API whose background services do not run: no reaper judges the run meanwhile."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api",
                        worker_heartbeat_seconds=HEARTBEAT)
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def run_engine(api: LiveServer, tmp_path: Path, function: str, **extra_env: str) -> tuple[Client, uuid.UUID, int]:
    """Claim a run of ``function`` as a worker does and run its flow-run process to its end."""
    client = api.client()
    pool, flows, run = process_pool_run(client, tmp_path, FLOWS_PY, function)
    worker = ProcessWorker(client, pool=pool, name="leasing", api_url=api.url, prewarm=False)
    claim = client.claim_flow_run(run.id, worker.name, pool)
    env = {**os.environ, **worker.run_environment(run.id, claim), "ORCH_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT),
           **extra_env}
    process = subprocess.run([sys.executable, "-m", "orchestrator.engine"], check=False, cwd=flows, env=env,
                             capture_output=True, text=True, timeout=120)
    return client, run.id, process.returncode


def test_only_the_output_reader_runs_beside_the_main_thread_before_running(api: LiveServer, tmp_path: Path) -> None:
    client, run_id, code = run_engine(api, tmp_path, "threads")
    assert code == 0
    assert client.read_flow_run(run_id).state.type == "COMPLETED"
    lines = log_text(client, run_id).splitlines()
    assert "threads before RUNNING: ['MainThread', 'output-reader']" in lines
    assert any(line.startswith("threads in the flow:") and "'run-heartbeat'" in line for line in lines), lines


def test_a_process_killed_as_its_flow_starts_has_its_lease_dropped(api: LiveServer, tmp_path: Path) -> None:
    """Killed right after RUNNING, before its heartbeat thread could send anything: the lease its
    main thread opened at the start is dropped by the kernel, and the API lapses the run's heartbeat
    (the reaper then judges it after the grace, not three heartbeats later)."""
    client, run_id, code = run_engine(api, tmp_path, "killed")
    assert code == -signal.SIGKILL
    assert client.read_flow_run(run_id).state.type == "RUNNING"

    def heartbeat_at() -> Any:
        with api.app.state.ctx.sessions() as session:
            return session.scalar(select(m.FlowRun.heartbeat_at).where(m.FlowRun.id == run_id))

    wait_until("the run's heartbeat to be lapsed by its dropped lease",
               lambda: heartbeat_at() < utcnow() - dt.timedelta(seconds=HEARTBEAT), timeout=20, interval=0.05)


def test_the_lease_is_open_before_the_running_report(api: LiveServer, tmp_path: Path) -> None:
    """Killed while its entrypoint loads: the API saw the process's lease drop, so it was open
    before the RUNNING report (and stays open through it: a run is never RUNNING unleased)."""
    from orchestrator.server.services import leases

    client, run_id, code = run_engine(api, tmp_path, "threads", KILL_BEFORE_RUNNING="1")
    assert code == -signal.SIGKILL
    assert client.read_flow_run(run_id).state.type == "PENDING"
    wait_until("the API to see the process's lease dropped",
               lambda: leases.RunHolder(run_id) in api.app.state.ctx.reaper.dropped, timeout=20, interval=0.05)


def test_a_sent_request_is_open_until_answered(api: LiveServer) -> None:
    client = api.client()
    sent = client.send_now("GET", "/health")
    wait_until("the answer to come back", lambda: not sent.waiting(), timeout=20, interval=0.01)
    assert sent.answer() is not None
    assert not sent.waiting()


def test_a_request_that_could_not_be_sent_fails_as_requests_do() -> None:
    from tests.conftest import free_port

    client = Client(f"http://127.0.0.1:{free_port()}/api", timeout=2, retry_seconds=0.0)
    sent = client.send_now("GET", "/health")
    assert not sent.waiting()
    with pytest.raises(ServerUnreachable):
        sent.answer()


def run_forked_engine(api: LiveServer, tmp_path: Path, function: str, meanwhile: Any = None,
                      **extra_env: str) -> tuple[Client, uuid.UUID, int]:
    """``run_engine`` through a fork server's standby that got ready before its order: its output
    captured and its connections to the API (the one the server's last order named) opened ahead.
    ``meanwhile(client, run_id)``: called once the process has its order."""
    from workers.forkserver import ForkServer

    client = api.client()
    pool, flows, run = process_pool_run(client, tmp_path, FLOWS_PY, function)
    worker = ProcessWorker(client, pool=pool, name="leasing", api_url=api.url, prewarm=False)
    claim = client.claim_flow_run(run.id, worker.name, pool)
    forks = ForkServer()
    try:
        assert forks.wait_ready(60), "no fork server ready"
        first = forks.take({"ORCH_FLOW_RUN_ID": "names-the-api", "ORCH_API_URL": api.url}, None)
        assert first is not None and first.wait(timeout=60) == 2 and first.stdout is not None
        first.stdout.close()
        server = forks.server_pid
        forks.prepare()
        [standby] = wait_until("the standby", lambda: {int(p) for p in Path(
            f"/proc/{server}/task/{server}/children").read_text().split()}, 30, 0.01)
        wait_until("the standby's set-up", lambda: os.readlink(f"/proc/{standby}/fd/1").startswith("pipe:"), 30, 0.01)
        wait_until("the standby handed over", lambda: standby in forks.standbys, 30, 0.01)
        env = {**worker.run_environment(run.id, claim), "ORCH_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT), **extra_env}
        process = forks.take(env, str(flows))
        assert process is not None and process.pid == standby and process.stdout is not None
        if meanwhile is not None:
            meanwhile(client, run.id)
        process.stdout.read()
        process.stdout.close()
        return client, run.id, process.wait(timeout=120)
    finally:
        forks.close()


def test_a_standby_that_got_ready_ahead_holds_its_lease_before_running_and_runs_the_flow(
        api: LiveServer, tmp_path: Path) -> None:
    from orchestrator.server.services import leases

    client, run_id, code = run_forked_engine(api, tmp_path, "threads", KILL_BEFORE_RUNNING="1")
    assert code == -signal.SIGKILL
    assert client.read_flow_run(run_id).state.type == "PENDING"
    wait_until("the API to see the process's lease dropped",
               lambda: leases.RunHolder(run_id) in api.app.state.ctx.reaper.dropped, timeout=20, interval=0.05)
    (tmp_path / "again").mkdir()
    client, run_id, code = run_forked_engine(api, tmp_path / "again", "threads")
    assert code == 0
    assert client.read_flow_run(run_id).state.type == "COMPLETED"
    lines = log_text(client, run_id).splitlines()
    assert "threads before RUNNING: ['MainThread', 'output-reader']" in lines
    assert any(line.startswith("threads in the flow:") and "'run-heartbeat'" in line for line in lines), lines


def test_a_standby_that_got_ready_ahead_heartbeats_and_sees_a_cancellation(api: LiveServer, tmp_path: Path) -> None:
    """No worker watches this process: only its heartbeat's answer can tell it the run is cancelled."""
    def cancel_once_running(client: Client, run_id: uuid.UUID) -> None:
        wait_until("RUNNING", lambda: client.read_flow_run(run_id).state.type == "RUNNING", timeout=60, interval=0.02)
        client.cancel_flow_run(run_id)

    client, run_id, code = run_forked_engine(api, tmp_path, "sleeps", cancel_once_running,
                                             ORCH_WORKER_HEARTBEAT_SECONDS="1")
    assert code == 1
    assert client.read_flow_run(run_id).state.type == "CANCELLED"
