"""``orch server start --processes N`` (``cli/processes.py``): N API processes on one port, on
PostgreSQL. Many clients creating runs through the port reach both processes and every run is
created once (a repeated idempotency key, sent to whichever process, gets the same run); SIGTERM
stops every process; a forked process that dies stops the server, the first one's death (even by
SIGKILL) ends the others; SQLite refuses more than one process, naming why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.errors import OrchestratorError
from tests.harness import clean_env, free_port, postgres_env, wait_until

REPO = Path(__file__).resolve().parents[2]
CLIENTS, KEYS_PER_CLIENT = 10, 20


def start(tmp_path: Path, env: dict[str, str], processes: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**clean_env(), **env, "ORCH_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with (tmp_path / "server.out").open("wb") as out, (tmp_path / "server.err").open("wb") as err:
        server = subprocess.Popen(  # the server has its own copies of the files
            [sys.executable, "-m", "orchestrator.cli.main", "server", "start", "--port", str(port), "--processes",
             str(processes)], env=env, stdout=out, stderr=err, process_group=0)
    return server, port


def errors_of(tmp_path: Path) -> str:
    return (tmp_path / "server.err").read_text()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def two_processes(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, list[int]]]:
    server, port = start(tmp_path, postgres_env(postgres_url, redis_url), 2)
    pids = [server.pid]

    def running() -> None:
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}): {errors_of(tmp_path)}")

    try:
        api = Client(f"http://127.0.0.1:{port}/api", timeout=10)
        wait_until("health", lambda: api.request("GET", "/health", timeout=2), 60, alive=running,
                   ignore=(OSError, OrchestratorError))
        api.close()
        # Health may be the forked process's answer: the first one is ready once it says so.
        wait_until("the first process", lambda: "orchestrator API at" in (tmp_path / "server.out").read_text(), 60,
                   alive=running)
        pids += wait_until("the forked process", lambda: children(server.pid), 30)
        yield server, port, pids
    finally:
        for pid in pids:  # the forked one is in a process group of its own
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.wait(30)


def test_two_processes_serve_many_clients_and_create_each_run_once(
    two_processes: tuple[subprocess.Popen[bytes], int, list[int]], postgres_url: str,
) -> None:
    _, port, pids = two_processes
    assert len(pids) == 2
    api = Client(f"http://127.0.0.1:{port}/api", timeout=60)
    try:
        api.request("POST", "/work_pools", body={"name": "idle", "type": "process"})
        deployment = api.upsert_deployment(schemas.DeploymentCreate(
            flow_name="noop", name="idle", entrypoint="flows.py:noop", path="/tmp", work_pool_name="idle")).id
    finally:
        api.close()
    keys = [[uuid.uuid4().hex for _ in range(KEYS_PER_CLIENT)] for _ in range(CLIENTS)]
    answers: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}

    def client(index: int) -> None:
        # Each key twice, from two clients (own connections, so perhaps two processes): one run.
        own = Client(f"http://127.0.0.1:{port}/api", timeout=60)
        try:
            for key in keys[index] + keys[(index + 1) % CLIENTS]:
                run = own.request("POST", f"/deployments/{deployment}/runs", body={"idempotency_key": key})
                with lock:
                    answers.append((key, run["id"]))
        except BaseException as error:  # noqa: BLE001 (reported by the test thread)
            errors.append(error)
        finally:
            own.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert len(answers) == 2 * CLIENTS * KEYS_PER_CLIENT
    ids_by_key: dict[str, set[str]] = {}
    for key, run_id in answers:
        ids_by_key.setdefault(key, set()).add(run_id)
    assert all(len(ids) == 1 for ids in ids_by_key.values())
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id::text, idempotency_key FROM flow_runs")).all()
            states = connection.execute(text("SELECT count(*) FROM flow_run_states")).scalar_one()
    finally:
        engine.dispose()
    assert Counter(key for _, key in rows) == Counter({key: 1 for key in ids_by_key})
    assert {run_id for run_id, _ in rows} == {next(iter(ids)) for ids in ids_by_key.values()}
    assert states == len(rows)  # one first state each
    # Both processes served: each spent a share of the CPU the creates cost.
    used = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in pids}
    assert all(share > 0.1 * sum(used.values()) for share in used.values()), used


def test_sigterm_stops_every_process(two_processes: tuple[subprocess.Popen[bytes], int, list[int]],
                                     tmp_path: Path) -> None:
    server, _, pids = two_processes
    server.send_signal(signal.SIGTERM)
    assert server.wait(60) == 0
    assert not [pid for pid in pids if alive(pid)]
    assert "Traceback" not in errors_of(tmp_path)


def test_a_forked_process_that_dies_stops_the_server(
    two_processes: tuple[subprocess.Popen[bytes], int, list[int]], tmp_path: Path,
) -> None:
    server, _, pids = two_processes
    os.kill(pids[1], signal.SIGKILL)
    assert server.wait(60) == 1
    assert f"API process {pids[1]} exited with code -9: the server stops" in errors_of(tmp_path)


def test_the_others_end_when_the_first_is_killed(two_processes: tuple[subprocess.Popen[bytes], int, list[int]]) -> None:
    server, _, pids = two_processes
    server.kill()
    server.wait(30)
    wait_until("the forked process to end (its parent died)", lambda: not alive(pids[1]), 30)


def test_sqlite_refuses_more_than_one_process(tmp_path: Path) -> None:
    server, _ = start(tmp_path, {}, 2)
    assert server.wait(60) == 1
    assert "needs PostgreSQL" in errors_of(tmp_path) and "SQLite" in errors_of(tmp_path)


def test_processes_must_be_one_or_more(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    server, _ = start(tmp_path, postgres_env(postgres_url, redis_url), 0)
    assert server.wait(60) == 2  # on the command line: a usage error, as typer's range check answers it
    assert "--processes" in errors_of(tmp_path) and "Traceback" not in errors_of(tmp_path)


def test_processes_from_the_environment_must_be_one_or_more(tmp_path: Path, postgres_url: str,
                                                            redis_url: str) -> None:
    env = {**postgres_env(postgres_url, redis_url), "ORCH_SERVER_PROCESSES": "0"}
    port = free_port()
    env = {**clean_env(), **env, "ORCH_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "server", "start", "--port", str(port)],
                          check=False, env=env, capture_output=True, timeout=60)
    assert done.returncode == 2  # the setting's own check names it, in one line
    assert done.stderr.decode().splitlines() == [
        "Error: invalid setting: ORCH_SERVER_PROCESSES: Input should be greater than or equal to 1"]
