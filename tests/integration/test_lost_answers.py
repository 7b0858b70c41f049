"""A request that took effect but whose answer was lost (the server replica died after its commit,
a connection reset) is sent again by the client; the repeat must not strand the run. Found by the
replica test (``tests/faults/test_replicas.py``): a repeated claim left a run PENDING for a live
worker forever, and a repeated RUNNING report made the flow-run process exit without running the
flow, and the run was then marked CRASHED."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.errors import Conflict
from orchestrator.runtime.engine import RunProcess
from orchestrator.runtime.logs import LogShipper
from orchestrator.states import StateType
from tests.integration.test_api import make_deployment


def test_a_claim_repeated_by_its_holder_is_answered_again_until_the_run_starts(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate())
    first = client.claim_flow_run(run.id, "w1")
    again = client.claim_flow_run(run.id, "w1")  # the first answer "lost"
    assert again.flow_run.id == first.flow_run.id and again.flow_run.state.type == StateType.PENDING
    assert again.deployment.entrypoint == first.deployment.entrypoint
    with pytest.raises(Conflict):
        client.claim_flow_run(run.id, "w2")  # another worker still loses
    client.report_infrastructure(run.id, "process:host:123")
    with pytest.raises(Conflict):
        client.claim_flow_run(run.id, "w1")  # started: a new claim would start it twice
    states = [s.type for s in client.read_flow_run_states(run.id)]
    assert states == [StateType.SCHEDULED, StateType.PENDING]  # the repeat wrote nothing


@pytest.mark.parametrize("state", [StateType.RUNNING, StateType.COMPLETED])
def test_a_report_that_had_taken_effect_is_done_not_an_error(api: Any, state: StateType) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate())
    client.claim_flow_run(run.id, "w1")
    if state == StateType.COMPLETED:
        client.set_flow_run_state(run.id, StateType.RUNNING, worker_name="w1")
    client.set_flow_run_state(run.id, state, worker_name="w1")  # the first try, whose answer was lost
    process = RunProcess(client, run.id, LogShipper(client, run.id), worker_name="w1", heartbeat_seconds=10)
    process.report(state)  # the repeat: refused by the state machine, yet done
    assert client.read_flow_run(run.id).state.type == state

    other = RunProcess(client, run.id, LogShipper(client, run.id), worker_name="w2", heartbeat_seconds=10)
    with pytest.raises(Conflict):
        other.report(state)  # not this worker's: a refusal stays a refusal
