"""A worker whose every slot runs a flow takes no further run from the broker: another worker of the
pool starts it at once, not after the dispatcher's redispatch period (pools.broker.celery_app,
``worker_disable_prefetch``; Redis only: Celery offers it for no other broker)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import harness
from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

FLOWS = textwrap.dedent("""
    import pathlib
    import time

    from orchestrator import flow

    @flow
    def blocker(gate: str) -> str:
        while not pathlib.Path(gate).exists():
            time.sleep(0.05)
        return "done"
""")


@pytest.fixture
def stack(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Stack]:
    # A redispatch far longer than the test: a run held by the busy worker would wait for it
    env = {**harness.postgres_env(postgres_url, redis_url), "ORCH_DISPATCHER_REDISPATCH_SECONDS": "600"}
    s = Stack(tmp_path, env)
    yield s
    s.stop()


def test_a_run_goes_to_the_free_worker_not_to_the_one_at_its_limit(stack: Stack) -> None:
    stack.start_server()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python(
        'from flows import blocker; print(blocker.deploy(name="b", work_pool_name="local"))'
    )
    assert deployed.returncode == 0, deployed.stderr
    deployment_id = deployed.stdout.strip().splitlines()[-1]
    gate = stack.project / "gate"

    def running(run: dict[str, Any]) -> dict[str, Any] | None:
        seen = stack.get(f"/flow_runs/{run['id']}")
        return seen if seen["state"]["type"] == "RUNNING" else None

    try:
        stack.start_worker("local", "--limit", "1", "--name", "busy", name="busy")
        first = stack.post(f"/deployments/{deployment_id}/runs", {"parameters": {"gate": str(gate)}})
        assert (
            wait_until("the first run RUNNING", lambda: running(first), 90, describe=stack.all_logs)[
                "worker_name"
            ]
            == "busy"
        )

        stack.start_worker("local", "--limit", "1", "--name", "free", name="free")
        second = stack.post(f"/deployments/{deployment_id}/runs", {"parameters": {"gate": str(gate)}})
        started = wait_until("the second run RUNNING", lambda: running(second), 60, describe=stack.all_logs)
        assert started["worker_name"] == "free"
    finally:
        gate.touch()  # the blockers end, pass or fail: a worker stopping waits for its running flows
    for run in (first, second):
        wait_until(
            "the run COMPLETED",
            lambda run=run: stack.get(f"/flow_runs/{run['id']}")["state"]["type"] == "COMPLETED",
            60,
            describe=stack.all_logs,
        )
