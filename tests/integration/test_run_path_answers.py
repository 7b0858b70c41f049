"""The run path's answers and rows (issue 22: its statements are Core statements answered from
their rows, no ``FlowRun`` entity loaded): each answer carries every field of the run as its
read shows it, no entity is left in the session, and a run a session holds reads what a
transition wrote. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import event

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from orchestrator.states import StateType
from tests.integration.test_api import make_deployment

_FIELDS = set(schemas.FlowRun.model_fields)


def _same_as_read(client: Any, answer: dict[str, Any]) -> None:
    read = client.request("GET", f"/flow_runs/{answer['id']}")
    assert set(answer) == set(read) == _FIELDS
    assert {k: v for k, v in answer.items() if v != read[k]} == {}


def test_the_claim_beats_and_states_answer_every_field_as_the_read_does(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client, job_variables={"env": {"A": "1"}})
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": 3}, tags=["t"]))
    claim = client.request("POST", f"/flow_runs/{run.id}/claim", body={"worker_name": "w"})
    _same_as_read(client, claim["flow_run"])
    assert claim["flow_run"]["state"]["type"] == "PENDING" and claim["flow_run"]["worker_name"] == "w"
    beat = client.request("POST", f"/flow_runs/{run.id}/heartbeat", params={"infrastructure_id": "pid-1"})
    _same_as_read(client, beat)
    assert beat["infrastructure_id"] == "pid-1"
    running = client.request("POST", f"/flow_runs/{run.id}/state", body={
        "type": "RUNNING", "worker_name": "w", "flow_version": "v1", "flow_run_name": "named"})
    _same_as_read(client, running)
    assert (running["run_count"], running["flow_version"], running["name"]) == (1, "v1", "named")
    assert running["start_time"] is not None and running["heartbeat_at"] is not None
    _same_as_read(client, client.request("POST", f"/flow_runs/{run.id}/heartbeat"))
    completed = client.request("POST", f"/flow_runs/{run.id}/state", body={
        "type": "COMPLETED", "worker_name": "w", "result": {"sum": 4}})
    _same_as_read(client, completed)
    assert completed["result"] == {"sum": 4} and completed["end_time"] is not None


def _run(sessions: Any) -> Any:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate(), now=dt.datetime.now(dt.UTC))
        return run.id


def _watch_runs_loaded(session: Any) -> list[Any]:
    """The ``FlowRun`` entities ``session`` loads from here on (the identity map holds them weakly)."""
    loaded: list[Any] = []
    event.listen(session, "loaded_as_persistent",
                 lambda _session, instance: loaded.append(instance) if isinstance(instance, m.FlowRun) else None)
    return loaded


def test_the_run_path_loads_no_flow_run_entity(sessions: Any) -> None:
    run_id = _run(sessions)
    with sessions.begin() as session:
        loaded = _watch_runs_loaded(session)
        assert isinstance(claims.claim(session, run_id, "w"), claims.Claimed)
        assert loaded == []
    for state in (StateType.RUNNING, StateType.COMPLETED):
        with sessions.begin() as session:
            loaded = _watch_runs_loaded(session)
            flow_runs.set_state(session, run_id, schemas.StateCreate(type=state, worker_name="w"))
            flow_runs.heartbeat(session, run_id)
            assert loaded == []


def test_a_run_the_session_holds_reads_what_a_transition_wrote(sessions: Any) -> None:
    run_id = _run(sessions)
    with sessions.begin() as session:
        held = session.get(m.FlowRun, run_id)
        assert held is not None and held.state_type == StateType.SCHEDULED
        claimed = claims.claim(session, run_id, "w")
        assert isinstance(claimed, claims.Claimed)
        assert (held.state_type, held.worker_name) == (StateType.PENDING, "w")
        flow_runs.set_state(session, run_id, schemas.StateCreate(type=StateType.RUNNING, worker_name="w"))
        assert (held.state_type, held.run_count) == (StateType.RUNNING, 1)
