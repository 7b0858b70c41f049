"""A worker serving all of its pool's work queues also serves a queue created after it started."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

FLOWS = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def hello() -> str:
        return "hello"
''')

RUN_ON_LATE_QUEUE = textwrap.dedent('''
    import json
    from orchestrator import run_deployment
    run = run_deployment("hello/on-pool", work_queue_name="late", timeout=30)
    print(json.dumps({"state": run.state.type, "queue": run.work_queue_name, "result": run.result}))
''')


def wait_for_online_worker(stack: Stack, pool: str, timeout: float = 60) -> None:
    wait_until(f"an ONLINE worker in pool {pool!r}", lambda: stack.online_workers(pool), timeout, 0.05,
               describe=stack.all_logs)


def test_a_queue_created_while_the_worker_runs_is_served(stack: Stack) -> None:
    stack.env["ORCH_WORKER_HEARTBEAT_SECONDS"] = "0.5"  # the worker looks for new queues after each heartbeat
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python('from flows import hello; hello.deploy(name="on-pool", work_pool_name="local")')
    assert deployed.returncode == 0, deployed.stderr
    stack.start("worker", "worker", "start", "--pool", "local")
    wait_for_online_worker(stack, "local")

    created = stack.orch("work-queue", "create", "late", "--pool", "local", "--priority", "5")
    assert created.returncode == 0, created.stderr
    reported = stack.python(RUN_ON_LATE_QUEUE)
    assert reported.returncode == 0, reported.stderr + stack.all_logs()
    run = json.loads(reported.stdout.strip().splitlines()[-1])
    assert run == {"state": "COMPLETED", "queue": "late", "result": "hello"}, stack.all_logs()
    assert "now also serving work queue 'late'" in (stack.logs / "worker.log").read_text()
