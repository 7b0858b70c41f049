"""A new user's first hour, server and worker side, typed as a user types it: every mistake is one
line on stderr and a non-zero exit, nothing hangs silently, and a worker listens where its server
publishes (or is refused, saying why)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.conftest import ORCH, Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

NAME_RULE = "cannot contain / (names may not contain / % & > <)"


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    """A server on the embedded defaults, running."""
    stack = Stack(tmp_path, {})
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    yield stack
    stack.stop()


def wait_online(stack: Stack, pool: str, timeout: float = 60) -> None:
    # The pool may not exist yet: orch dev's worker creates it.
    wait_until(f"an ONLINE worker in pool {pool!r}", lambda: stack.online_workers(pool), timeout, 0.05,
               describe=stack.all_logs)


# --- names and numbers the API could never take -----------------------------------------------------


def test_bad_names_and_numbers_are_one_line_errors(embedded: Stack) -> None:
    orch = embedded.orch
    assert orch("work-pool", "create", "local", "--type", "process").returncode == 0
    one_line_error(orch("work-pool", "create", "a/b"), "invalid work pool: name:", NAME_RULE)
    one_line_error(orch("work-pool", "create", ""), "invalid work pool: name: cannot be empty")
    one_line_error(orch("work-pool", "create", "x" * 5000), "name: is 5000 characters long, the most is 255")
    one_line_error(orch("work-queue", "create", "a/b", "--pool", "local"), "invalid work queue: name:", NAME_RULE)
    one_line_error(orch("work-queue", "create", "q", "--pool", "local", "--priority", "99999999999"),
                   "Invalid value for '--priority'", "2147483647")  # refused before any request
    one_line_error(orch("work-pool", "set-concurrency-limit", "local", "99999999999"), "concurrency limit",
                   "0 to 2147483647")
    for command in (["work-pool", "inspect", "a/b"], ["work-pool", "delete", "a/b"], ["work-pool", "pause", "a/b"],
                    ["work-queue", "ls", "--pool", "a/b"], ["work-queue", "delete", "q", "--pool", "a/b"],
                    ["worker", "start", "--pool", "a/b", "--type", "process"]):
        one_line_error(orch(*command), "invalid work pool name 'a/b':", NAME_RULE)
    one_line_error(orch("worker", "start", "--pool", "local", "--name", "me/you"), "invalid worker name")
    # The API applies the same rule to what reaches it by other means.
    assert [p["name"] for p in embedded.get("/work_pools")] == ["local"]


def test_an_api_url_without_api_says_what_is_wrong(embedded: Stack) -> None:
    root = f"http://127.0.0.1:{embedded.port}"
    embedded.env["ORCH_API_URL"] = root
    for command in (["work-pool", "ls"], ["work-pool", "inspect", "local"], ["deployment", "ls"],
                    ["worker", "start", "--pool", "local", "--type", "process"]):
        one_line_error(embedded.orch(*command),
                       f"ORCH_API_URL={root} answers but is not the API; did you mean {root}/api?")
    embedded.env["ORCH_API_URL"] = f"{root}/elsewhere"
    one_line_error(embedded.orch("work-pool", "ls"), "is not the orchestrator API")


# --- the server refuses to start where it could not work ---------------------------------------


def test_server_start_refuses_a_bad_port_database_or_broker(tmp_path: Path, pg_admin: object,
                                                            redis_url: str) -> None:
    stack = Stack(tmp_path, {})
    bad_port = stack.orch("server", "start", "--port", "99999", timeout=30)
    one_line_error(bad_port, "Invalid value for '--port': Input should be less than or equal to 65535 (see '")
    assert bad_port.returncode == 2  # a usage mistake, as every option value the parser refuses
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        refused = stack.orch("server", "start", "--port", port, timeout=30)
        dev = stack.orch("dev", "--port", port, timeout=30)  # the same checks
    one_line_error(refused, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "API at" not in refused.stdout  # said only once it listens
    one_line_error(dev, f"cannot listen on 127.0.0.1:{port}: Address already in use")

    missing = "postgresql+psycopg://postgres@127.0.0.1:5432/orch_no_such_database"
    stack.env["ORCH_DATABASE_URL"] = missing
    one_line_error(stack.orch("server", "start", "--port", str(free_port()), timeout=60),
                   f"cannot use the database {missing}:", 'database "orch_no_such_database" does not exist')
    stack.env["ORCH_DATABASE_URL"] = "mysql://me:secret@db/orchestrator"
    line = one_line_error(stack.orch("server", "start", timeout=30),
                          "ORCH_DATABASE_URL: unsupported database URL", "sqlite:///PATH or postgresql+psycopg://")
    assert "secret" not in line
    del stack.env["ORCH_DATABASE_URL"]

    stack.env["ORCH_BROKER_URL"] = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    began = time.monotonic()
    line = one_line_error(stack.orch("server", "start", "--port", str(free_port()), timeout=60),
                          "cannot use the broker at redis://:***@127.0.0.1:")
    assert time.monotonic() - began < 30 and "secret" not in line


def test_orch_dev_stops_promptly_and_quietly_on_ctrl_c(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {})
    # Its own session, so that a signal to the group is what a terminal's Ctrl-C is.
    dev = stack.spawn("dev", [*ORCH, "dev", "--port", str(stack.port)], cwd=stack.project, start_new_session=True)
    try:
        stack.wait_healthy()
        wait_online(stack, "default")
        began = time.monotonic()
        os.killpg(dev.pid, signal.SIGINT)
        dev.wait(timeout=30)
        took = time.monotonic() - began
    finally:
        stack.stop()
    output = (tmp_path / "dev.log").read_text()
    print(f"\n[figure] orch dev Ctrl-C -> exited: {took * 1000:.0f} ms")
    assert took < 5, output
    assert "cannot reach the API" not in output and "Traceback" not in output and "ERROR" not in output, output
    assert output.index("orchestrator API at") < output.index("serving pool 'default'")
    # One line of ours after the start's, not Celery's "worker: Warm shutdown (MainProcess)".
    after = [line for line in output[output.index("serving pool 'default'"):].splitlines()[1:] if line.strip()]
    assert len(after) == 1 and re.fullmatch(r"worker \S+ stopping: its running flow runs finish first", after[0]), output


def test_a_worker_stopped_by_sigterm_says_one_line_of_its_own(embedded: Stack) -> None:
    """``orch worker start`` on SIGTERM (Kubernetes' and systemd's stop): one line of its own, not
    Celery's "worker: Warm shutdown (MainProcess)", and exit 0 -- the same whether the signal comes
    before Celery has installed its handlers (``stop_before_serving``) or after."""
    stack = embedded
    worker = stack.spawn("worker", [*ORCH, "worker", "start", "--pool", "p", "--type", "process"])
    wait_online(stack, "p")
    worker.terminate()
    assert worker.wait(timeout=30) == 0, stack.log_tail("worker")
    stack.forget(worker)
    output = stack.log_tail("worker")
    # The signal may come before the worker says it serves (it is online a moment before): its
    # stopping line is then the only one.
    after = [text for text in output.splitlines() if text.strip() and " serving pool 'p' " not in text]
    assert len(after) == 1 and re.fullmatch(r"worker \S+ stopping: its running flow runs finish first", after[0]), output


# --- a worker against a dead API --------------------------------------------------------------


def test_worker_says_at_once_that_the_api_does_not_answer_then_serves_when_it_does(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {})
    log = tmp_path / "worker.log"
    stack.start("worker", "worker", "start", "--pool", "local", "--type", "process")
    wait_until("the worker to say it cannot reach the API", lambda: "cannot reach the API" in log.read_text(), 15,
               0.05, alive=stack.check_alive, describe=log.read_text)
    assert f"cannot reach the API at {stack.api_url}" in log.read_text()
    assert "retrying for up to 30 s" in log.read_text()
    stack.start("server", "server", "start", "--port", str(stack.port))  # the server comes up late
    try:
        stack.wait_healthy()
        wait_online(stack, "local")
    finally:
        stack.stop()


def test_worker_gives_up_on_a_dead_api_after_its_bound(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {})
    stack.env["ORCH_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
    began = time.monotonic()
    result = stack.orch("worker", "start", "--pool", "local", timeout=90)
    took = time.monotonic() - began
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 2 and lines[0].endswith("retrying for up to 30 s"), result.stderr
    assert lines[1].startswith(f"Error: cannot reach the API at {stack.env['ORCH_API_URL']}")
    assert 29 < took < 60


# --- a worker listens where its server publishes -----------------------------------------------

FLOWS = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def add(x: int, y: int = 2) -> int:
        return x + y
''')

RUN = textwrap.dedent('''
    import json
    from orchestrator import run_deployment
    run = run_deployment("add/sum", parameters={"x": 5}, timeout=60)
    print(json.dumps({"state": run.state.type, "result": run.result}))
''')


def test_worker_with_another_home_is_refused_on_the_embedded_broker(embedded: Stack, tmp_path: Path,
                                                                     redis_url: str) -> None:
    assert embedded.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    embedded.env["ORCH_HOME"] = str(tmp_path / "another-home")
    line = one_line_error(embedded.orch("worker", "start", "--pool", "local", timeout=60),
                          "the server uses its embedded broker", f"ORCH_HOME is {tmp_path / 'another-home'}")
    assert "start the worker with the server's ORCH_HOME" in line
    assert not (tmp_path / "another-home").exists()  # the check created no broker there
    embedded.env["ORCH_BROKER_URL"] = redis_url
    one_line_error(embedded.orch("worker", "start", "--pool", "local", timeout=60),
                   f"ORCH_BROKER_URL={redis_url} is not the server's broker")
    assert embedded.get("/work_pools/local/workers") == []  # never shown ONLINE


def test_readme_production_block_worker_sets_only_the_api_url(tmp_path: Path, postgres_url: str,
                                                               redis_url: str) -> None:
    """Server on PostgreSQL + Redis; the worker, with its own home and only ORCH_API_URL, learns the
    broker from the API and runs the deployment."""
    stack = Stack(tmp_path, {"ORCH_DATABASE_URL": postgres_url, "ORCH_BROKER_URL": redis_url})
    try:
        stack.start("server", "server", "start", "--port", str(stack.port))
        stack.wait_healthy()
        assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
        (stack.project / "flows.py").write_text(FLOWS)
        deployed = stack.python('from flows import add; add.deploy(name="sum", work_pool_name="local")')
        assert deployed.returncode == 0, deployed.stderr
        for name in ("ORCH_DATABASE_URL", "ORCH_BROKER_URL"):
            del stack.env[name]
        stack.env["ORCH_HOME"] = str(tmp_path / "worker-machine")
        stack.start("worker", "worker", "start", "--pool", "local")
        wait_online(stack, "local")
        reported = stack.python(RUN)
        assert reported.returncode == 0, reported.stderr + stack.all_logs()
        assert json.loads(reported.stdout.strip().splitlines()[-1]) == {"state": "COMPLETED", "result": 7}
        stack.env["ORCH_BROKER_URL"] = redis_url.rsplit("/", 1)[0] + "/15"  # the same Redis, another db
        one_line_error(stack.orch("worker", "start", "--pool", "local", timeout=60), "is not the server's broker")
    finally:
        stack.stop()


def test_flow_serve_with_another_home_is_refused_before_registering(embedded: Stack, tmp_path: Path) -> None:
    (embedded.project / "flows.py").write_text(FLOWS)
    embedded.env["ORCH_HOME"] = str(tmp_path / "another-home")
    served = embedded.python('from flows import add; add.serve("served")', timeout=60)
    assert served.returncode != 0
    assert "the server uses its embedded broker" in served.stderr.strip().splitlines()[-1], served.stderr
    assert embedded.get("/deployments") == []
