"""``emit_event`` in a deployment's run, as a user writes it: the events are stored related to the
run's flow-run, flow, deployment and tags (and task run, inside a task), and the API restarting
while the flow emits loses none of them."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine
from tests.e2e.conftest import Stack
from tests.harness import FINAL, wait_until

pytestmark = pytest.mark.e2e

FLOWS = textwrap.dedent('''
    import pathlib
    import time

    from orchestrator import emit_event, flow, task


    def wait_for(path: str) -> None:
        deadline = time.monotonic() + 120
        while not pathlib.Path(path).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(path)
            time.sleep(0.02)


    @task
    def inside() -> None:
        emit_event("test.in-a-task", {"orchestrator.resource.id": "test.task-thing"})


    @flow
    def emitter(gate: str, marker: str) -> int:
        for i in range(20):
            emit_event("test.before", {"orchestrator.resource.id": f"test.item.{i}"}, payload={"i": i})
        inside()
        pathlib.Path(marker).write_text("emitted")
        wait_for(gate)  # the test stops the API meanwhile
        for i in range(20, 40):
            emit_event("test.during-outage", {"orchestrator.resource.id": f"test.item.{i}"}, payload={"i": i})
        pathlib.Path(marker).write_text("done")
        return 40


    @flow
    def quick() -> None:
        for i in range(2000):  # 20 POSTs: more than the time between the flow's return and its report
            emit_event("test.quick", {"orchestrator.resource.id": f"test.quick.{i}"}, payload={"i": i})
''')


def _events(stack: Stack) -> list[Any]:
    url = stack.env.get("ORCH_DATABASE_URL") or f"sqlite:///{stack.home / 'orchestrator.db'}"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(m.Event.event, m.Event.payload, m.Event.related, m.Event.received)
                                           .where(m.Event.event.like("test.%")).order_by(m.Event.seq)))
    finally:
        engine.dispose()


def test_events_from_a_run_are_related_to_it_and_outlast_an_api_restart(stack: Stack) -> None:
    server = stack.start_server()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    deployed = stack.python('from flows import emitter; print(emitter.deploy(name="e", work_pool_name="local", '
                            'tags=["nightly"]))')
    assert deployed.returncode == 0, deployed.stderr
    deployment_id = deployed.stdout.strip().splitlines()[-1]
    stack.start_worker("local")
    gate, marker = stack.project / "gate", stack.project / "marker"
    run = stack.post(f"/deployments/{deployment_id}/runs", {"parameters": {"gate": str(gate), "marker": str(marker)}})

    wait_until("the flow's first events", lambda: marker.exists(), 90, alive=stack.check_alive,
               describe=stack.all_logs)
    stack.kill(server)  # the API goes down while the flow runs and emits
    gate.touch()
    wait_until("the flow to emit during the outage", lambda: marker.read_text() == "done", 60,
               describe=stack.all_logs)
    stack.spawn("server-2", stack.server_argv(), cwd=stack.project)
    stack.wait_healthy(90)


    def ended() -> dict[str, Any] | None:
        seen = stack.get(f"/flow_runs/{run['id']}")
        return seen if seen["state"]["type"] in FINAL else None

    final = wait_until("the run to end", ended, 120, ignore=(OSError,), describe=stack.all_logs)
    assert final["state"]["type"] == "COMPLETED", stack.all_logs()

    def all_stored() -> list[Any] | None:
        events = _events(stack)
        return events if len(events) >= 41 else None

    events = wait_until("all 41 events stored", all_stored, 30,
                        describe=lambda: f"{len(_events(stack))} stored\n{stack.all_logs()}")

    assert len(events) == 41  # none lost, none twice
    counted = [e.payload["i"] for e in events if e.event != "test.in-a-task"]
    assert counted == list(range(40))
    expected = {("flow-run", f"orchestrator.flow-run.{run['id']}"), ("flow", f"orchestrator.flow.{run['flow_id']}"),
                ("deployment", f"orchestrator.deployment.{deployment_id}"), ("tag", "orchestrator.tag.nightly")}
    for event in events:
        roles = {(r["orchestrator.resource.role"], r["orchestrator.resource.id"]) for r in event.related}
        assert expected <= roles, event
    flow_run = next(r for r in events[0].related if r["orchestrator.resource.role"] == "flow-run")
    assert flow_run["orchestrator.resource.name"] == final["name"]
    (in_task,) = [e for e in events if e.event == "test.in-a-task"]
    assert any(r["orchestrator.resource.role"] == "task-run" for r in in_task.related)


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, {})
    yield s
    s.stop()


def test_a_runs_events_are_stored_before_its_final_state(embedded_stack: Stack) -> None:
    stack = embedded_stack
    stack.start_server()
    assert stack.orch("work-pool", "create", "local", "--type", "process").returncode == 0
    (stack.project / "flows.py").write_text(FLOWS)
    assert stack.python('from flows import quick; quick.deploy(name="q", work_pool_name="local")').returncode == 0
    stack.start_worker("local")
    watched = stack.orch("deployment", "run", "quick/q", "--watch")
    assert watched.returncode == 0, watched.stdout + watched.stderr + stack.all_logs()
    (run,) = stack.get("/flow_runs")["items"]
    events = _events(stack)
    assert [e.payload["i"] for e in events] == list(range(2000))
    # The flow-run process sent its events before it reported COMPLETED (both times are the server's).
    last = max(e.received for e in events)
    assert last.replace(tzinfo=last.tzinfo or dt.UTC) <= dt.datetime.fromisoformat(run["end_time"])
