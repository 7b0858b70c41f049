"""What a new user ran into, each now a clear answer: a second live worker under one name is
refused (and the name is free again once its worker has stopped), ``orch dev`` does not serve on
without its worker, and mistakes on the command line are named as such (a missing pool, a negative
limit, an unknown worker type, a bad ``--cron``)."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.harness import postgres_env, wait_until

pytestmark = pytest.mark.e2e

FLOWS = '''
from orchestrator import flow


@flow
def add(x: int = 1) -> int:
    return x + 1
'''


def run(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return stack.orch(*args, timeout=timeout)


def test_a_second_worker_under_a_live_workers_name_is_refused(postgres_url: str, redis_url: str,
                                                              tmp_path: Path) -> None:
    stack = Stack(tmp_path, postgres_env(postgres_url, redis_url))
    try:
        stack.start_server()
        first = stack.start_worker("local", "--type", "process", "--name", "twin")
        second = run(stack, "worker", "start", "--pool", "local", "--name", "twin")
        assert second.returncode == 1, second
        assert re.fullmatch(r"Error: worker name 'twin' is in use in pool 'local' by a worker that is ONLINE "
                            r"\(last heartbeat [-\d: ]+ UTC; the name is free once it is OFFLINE\); "
                            r"choose another with --name\n", second.stderr), second.stderr
        assert "serving pool" not in second.stdout
        # Stopped, the first one lets go of its name (its dropped connection says so within seconds).
        stack.stop_process(first)
        wait_until("twin OFFLINE", lambda: "twin" not in stack.online_workers("local"), timeout=60)
        stack.start_worker("local", "--name", "twin", name="worker-again")
    finally:
        stack.stop()


def test_orch_dev_stops_when_its_worker_exits(tmp_path: Path) -> None:
    stack = Stack(tmp_path, {})  # the embedded defaults, as orch dev is meant to run
    try:
        server = stack.start_server()
        created = run(stack, "work-pool", "create", "default", "--type", "docker")
        assert created.returncode == 0, created.stderr
        stack.stop_process(server)
        dev = run(stack, "dev", "--port", str(stack.port), timeout=90)
    finally:
        stack.stop()
    assert dev.returncode == 1, dev
    errors = [line for line in dev.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: work pool 'default' is of type 'docker', not 'process'",
                      ("Error: the bundled worker of pool 'default' exited with code 1 (its reason is above); "
                       "orch dev stops")], dev.stderr
    assert "orchestrator API at" in dev.stdout


@pytest.fixture
def served(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A server on PostgreSQL + Redis with the work pool 'local'."""
    stack = Stack(tmp_path, postgres_env(postgres_url, redis_url))
    try:
        stack.start_server()
        assert run(stack, "work-pool", "create", "local").returncode == 0
        yield stack
    finally:
        stack.stop()


def test_deployment_ls_of_a_missing_pool_says_so(served: Stack) -> None:
    missing = run(served, "deployment", "ls", "--pool", "nope")
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "Error: work pool 'nope' not found\n")


def test_a_negative_concurrency_limit_is_explained_and_a_limit_can_be_cleared(served: Stack) -> None:
    negative = run(served, "work-pool", "set-concurrency-limit", "local", "-1")
    assert (negative.returncode, negative.stderr) == (2, (
        "Error: concurrency limit -1: give 0 to 2147483647 runs at once (0 starts nothing); to remove the "
        "limit: orch work-pool clear-concurrency-limit local\n"))
    assert run(served, "work-pool", "set-concurrency-limit", "local", "3").returncode == 0
    cleared = run(served, "work-pool", "clear-concurrency-limit", "local")
    assert cleared.stdout == "Removed the concurrency limit of work pool 'local'.\n", cleared
    assert json.loads(run(served, "work-pool", "inspect", "local").stdout)["concurrency_limit"] is None


def test_an_unknown_worker_type_is_named_with_the_known_ones(served: Stack) -> None:
    weird = run(served, "worker", "start", "--pool", "local", "--type", "weird")
    assert (weird.returncode, weird.stderr) == (
        1, "Error: unknown worker type 'weird'; known types: process, docker, kubernetes\n")


def test_a_bad_cron_option_is_blamed_on_the_option_not_the_file(served: Stack) -> None:
    (served.project / "flows.py").write_text(FLOWS)
    (served.project / "orchestrator.yaml").write_text(textwrap.dedent('''
        deployments:
          - name: sum
            entrypoint: flows.py:add
            work_pool: {name: local}
    '''))
    bad_cron = run(served, "deploy", "--cron", "every day")
    assert bad_cron.returncode == 1, bad_cron
    assert bad_cron.stderr.startswith("Error: --cron: schedule (cron 'every day'): cron expression 'every day' "
                                      "is not valid"), bad_cron.stderr
    assert "orchestrator.yaml" not in bad_cron.stderr
    assert "add/sum" not in run(served, "deployment", "ls").stdout  # nothing was deployed
