"""End to end, as a user writes it: a flow calls ``emit_event``; another deployment's trigger
(``triggers=`` on ``deploy``) runs it with a templated parameter that keeps its type; the
triggered run COMPLETES on a process worker with that parameter."""

from __future__ import annotations

import textwrap

import pytest

from tests.e2e.conftest import Stack
from tests.harness import FINAL, wait_until

pytestmark = pytest.mark.e2e

FLOWS = textwrap.dedent('''
    from orchestrator import emit_event, flow


    @flow
    def producer(rows: int) -> None:
        emit_event("warehouse.table.loaded", {"orchestrator.resource.id": "warehouse.table.sales"},
                   payload={"rows": rows})


    @flow
    def consumer(rows: int, table: str) -> int:
        assert isinstance(rows, int), type(rows)
        return rows * 2
''')

DEPLOY = textwrap.dedent('''
    from flows import consumer, producer
    producer.deploy(name="p", work_pool_name="local")
    print(consumer.deploy(name="c", work_pool_name="local", triggers=[{
        "expect": ["warehouse.table.loaded"],
        "parameters": {"rows": "{{ event.payload.rows }}", "table": "{{ event.resource.id }}"}}]))
''')


def test_emit_event_in_one_flow_runs_another_deployment(stack: Stack) -> None:
    stack.start_server()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python(DEPLOY)
    assert deployed.returncode == 0, deployed.stderr
    consumer_id = deployed.stdout.strip().splitlines()[-1]
    stack.start_worker("local")
    assert stack.orch("deployment", "run", "producer/p", "--param", "rows=21", "--watch").returncode == 0

    def consumer_done() -> dict | None:  # type: ignore[type-arg]
        runs = stack.get(f"/flow_runs?deployment_id={consumer_id}")["items"]
        return runs[0] if runs and runs[0]["state"]["type"] in FINAL else None

    run = wait_until("the triggered run to end", consumer_done, 120, describe=stack.all_logs)
    assert run["state"]["type"] == "COMPLETED", stack.all_logs()
    assert run["parameters"] == {"rows": 21, "table": "warehouse.table.sales"}
