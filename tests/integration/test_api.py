"""The REST API on a live server, over SQLite and PostgreSQL (the ``api`` fixture)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.errors import Conflict, InvalidInput, NotFound, Unauthorized
from orchestrator.states import StateType
from pools.names import run_queue

SCHEMA = {
    "type": "object",
    "title": "Parameters",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 2}},
    "required": ["x"],
    "additionalProperties": False,
}


def make_deployment(client: Any, pool: str = "local", **overrides: Any) -> schemas.Deployment:
    try:
        client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    except Conflict:
        pass
    fields: dict[str, Any] = dict(
        flow_name="add", name="sum", entrypoint="flows.py:add", work_pool_name=pool,
        parameters={"x": 1}, parameter_openapi_schema=SCHEMA, tags=["team-a"],
    )
    fields.update(overrides)
    return client.upsert_deployment(schemas.DeploymentCreate(**fields))


def test_health_and_openapi(api: Any) -> None:
    client = api.client()
    assert client.request("GET", "/health") == {"status": "ok"}
    spec = client.request("GET", "/openapi.json")
    for path in ("/api/deployments", "/api/deployments/{deployment_id}/runs", "/api/flow_runs/{run_id}/state",
                 "/api/work_pools/{name}/queues", "/api/flow_runs/{run_id}/logs"):
        assert path in spec["paths"], path


def test_deployment_upsert_is_unique_per_flow_and_name(api: Any) -> None:
    client = api.client()
    first = make_deployment(client)
    second = make_deployment(client, description="changed")
    assert second.id == first.id
    assert second.description == "changed"
    other_flow = make_deployment(client, flow_name="other")
    assert other_flow.id != first.id
    assert client.read_deployment_by_name("add/sum").id == first.id
    assert {d.full_name for d in client.list_deployments()} == {"add/sum", "other/sum"}


def test_upsert_status_codes(api: Any) -> None:
    client = api.client()
    make_deployment(client)
    body = {"flow_name": "add", "name": "sum", "entrypoint": "flows.py:add", "work_pool_name": "local"}
    assert api.raw("POST", "/deployments", body)[0] == 200
    assert api.raw("POST", "/deployments", {**body, "name": "new"})[0] == 201


def test_unknown_objects_are_404(api: Any) -> None:
    client = api.client()
    with pytest.raises(NotFound, match="add/nope"):
        client.read_deployment_by_name("add/nope")
    with pytest.raises(NotFound):
        client.read_flow_run(uuid.uuid4())
    with pytest.raises(NotFound, match="ghost"):
        client.read_work_pool("ghost")


def test_deployment_needs_an_existing_pool(api: Any) -> None:
    client = api.client()
    with pytest.raises(NotFound, match="work pool 'missing'"):
        client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="missing"))


def test_run_parameters_are_enforced_with_a_named_error(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    with pytest.raises(InvalidInput) as bad_type:
        client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": "abc"}))
    assert bad_type.value.detail[0]["loc"] == ["body", "parameters", "x"]
    assert "parameter 'x'" in bad_type.value.detail[0]["msg"]
    with pytest.raises(InvalidInput, match="parameter 'z'"):
        client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"z": 1}))
    # Nothing was created by the refused requests.
    assert client.list_flow_runs().total == 0
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": 5}))
    assert run.parameters == {"x": 5}
    assert run.state.type == StateType.SCHEDULED


def test_deployment_defaults_must_fit_the_schema(api: Any) -> None:
    with pytest.raises(InvalidInput, match="parameter 'x'"):
        make_deployment(api.client(), parameters={"x": "one"})


def test_run_inherits_tags_and_merges_parameters(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client, parameters={"x": 1, "y": 3})
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": 9}, tags=["urgent"]))
    assert run.parameters == {"x": 9, "y": 3}
    assert sorted(run.tags) == ["team-a", "urgent"]
    assert run.deployment_version == deployment.version
    assert run.work_queue_name == "default"


def test_idempotency_key_returns_the_same_run(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    first = client.create_flow_run(deployment.id, schemas.FlowRunCreate(idempotency_key="k1"))
    again = client.create_flow_run(deployment.id, schemas.FlowRunCreate(idempotency_key="k1"))
    assert again.id == first.id
    assert client.list_flow_runs().total == 1


def test_idempotency_key_under_concurrent_clients(api: Any) -> None:
    deployment = make_deployment(api.client())
    ids: list[uuid.UUID] = []

    def create() -> None:
        ids.append(api.client().create_flow_run(deployment.id, schemas.FlowRunCreate(idempotency_key="race")).id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1


def test_created_run_is_published_on_its_pool_queue(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    assert api.broker.drain(run_queue("local", "default"), timeout=2) == [run.id]


def test_exactly_one_claimant_wins(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    winners: list[str] = []
    losers: list[str] = []
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        c = api.client()
        barrier.wait()
        try:
            c.claim_flow_run(run.id, name)
            winners.append(name)
        except Conflict:
            losers.append(name)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 5
    claimed = client.read_flow_run(run.id)
    assert claimed.state.type == StateType.PENDING
    assert claimed.worker_name == winners[0]


def test_claim_returns_what_the_worker_needs(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client, job_variables={"env": {"A": "1"}})
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(job_variables={"env": {"B": "2"}}))
    claim = client.claim_flow_run(run.id, "w")
    assert claim.deployment.entrypoint == "flows.py:add"
    assert claim.flow_run.job_variables == {"env": {"B": "2"}}
    assert "job_configuration" in claim.base_job_template


def test_future_run_cannot_be_claimed_early(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(scheduled_time=later))
    with pytest.raises(Conflict, match="not due"):
        client.claim_flow_run(run.id, "w")
    assert api.broker.drain(run_queue("local", "default"), timeout=0.2) == []


def test_paused_pool_refuses_claims(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    client.update_work_pool("local", schemas.WorkPoolUpdate(paused=True))
    with pytest.raises(Conflict, match="paused"):
        client.claim_flow_run(run.id, "w")


def test_state_reports_follow_the_state_machine(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    with pytest.raises(Conflict, match="cannot move to RUNNING"):
        client.set_flow_run_state(run.id, StateType.RUNNING)
    client.claim_flow_run(run.id, "w")
    running = client.set_flow_run_state(run.id, StateType.RUNNING)
    assert running.start_time is not None and running.run_count == 1
    done = client.set_flow_run_state(run.id, StateType.COMPLETED, result={"sum": 3})
    assert done.end_time is not None and done.result == {"sum": 3}
    with pytest.raises(Conflict):
        client.set_flow_run_state(run.id, StateType.FAILED)
    history = [s.type for s in client.read_flow_run_states(run.id)]
    assert history == [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.COMPLETED]


def test_cancel_of_a_scheduled_run_is_immediate(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    cancelled = client.cancel_flow_run(run.id)
    assert cancelled.state.type == StateType.CANCELLED
    with pytest.raises(Conflict):
        client.claim_flow_run(run.id, "w")
    with pytest.raises(Conflict, match="already CANCELLED"):
        client.cancel_flow_run(run.id)


def test_cancel_of_a_running_run_asks_its_worker(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    client.claim_flow_run(run.id, "w")
    client.set_flow_run_state(run.id, StateType.RUNNING)
    assert client.cancel_flow_run(run.id).state.type == StateType.CANCELLING


def test_flow_run_filters(api: Any) -> None:
    client = api.client()
    a = make_deployment(client, name="a")
    b = make_deployment(client, name="b", pool="other", tags=[])
    runs_a = [client.create_flow_run(a.id, schemas.FlowRunCreate(tags=[f"t{i}"])) for i in range(3)]
    run_b = client.create_flow_run(b.id, schemas.FlowRunCreate())
    client.cancel_flow_run(runs_a[0].id)
    assert client.list_flow_runs(deployment_id=a.id).total == 3
    assert {r.id for r in client.list_flow_runs(work_pool_name="other").items} == {run_b.id}
    assert {r.id for r in client.list_flow_runs(tag="t1").items} == {runs_a[1].id}
    assert client.list_flow_runs(tag="team-a").total == 3
    assert {r.id for r in client.list_flow_runs(state=["CANCELLED"]).items} == {runs_a[0].id}
    page = client.list_flow_runs(limit=2, offset=0)
    assert page.total == 4 and len(page.items) == 2


def test_logs_are_written_and_read_in_order(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate())
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    client.write_logs(run.id, [{"timestamp": now, "level": 20, "name": "stdout", "message": f"line {i}"}
                               for i in range(5)])
    logs = client.read_logs(run.id)
    assert [log.message for log in logs] == [f"line {i}" for i in range(5)]
    rest = client.read_logs(run.id, after=logs[2].id)
    assert [log.message for log in rest] == ["line 3", "line 4"]


def test_wait_returns_when_the_run_ends(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate())
    client.claim_flow_run(run.id, "w")
    started = threading.Event()

    def finish() -> None:
        started.wait(5)
        api.client().set_flow_run_state(run.id, StateType.CANCELLED)

    t = threading.Thread(target=finish)
    t.start()
    started.set()
    final = client.wait_for_flow_run(run.id, timeout=30)
    t.join()
    assert final.state.type == StateType.CANCELLED


def test_wait_times_out_with_the_current_run(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate())
    assert client.wait_for_flow_run(run.id, timeout=0.2).state.type == StateType.SCHEDULED


def test_work_pools_and_queues(api: Any) -> None:
    client = api.client()
    pool = client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process", concurrency_limit=3))
    assert pool.status == "NOT_READY"
    with pytest.raises(Conflict, match="already exists"):
        client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    with pytest.raises(InvalidInput, match="unknown work pool type"):
        client.create_work_pool(schemas.WorkPoolCreate(name="q", type="nope"))
    with pytest.raises(InvalidInput, match="job_configuration"):
        client.create_work_pool(schemas.WorkPoolCreate(name="q", type="process", base_job_template={"x": 1}))
    client.create_work_queue("p", schemas.WorkQueueCreate(name="high", priority=1))
    client.create_work_queue("p", schemas.WorkQueueCreate(name="low", priority=5))
    assert [q.name for q in client.list_work_queues("p")] == ["default", "high", "low"]
    with pytest.raises(Conflict, match="default queue"):
        client.delete_work_queue("p", "default")
    client.heartbeat("p", "worker-1")
    assert client.read_work_pool("p").status == "READY"
    assert [(w.name, w.status) for w in client.list_workers("p")] == [("worker-1", "ONLINE")]


def test_pool_in_use_cannot_be_deleted(api: Any) -> None:
    client = api.client()
    make_deployment(client)
    with pytest.raises(Conflict, match="used by 1 deployment"):
        client.delete_work_pool("local")


def test_bad_input_is_422_not_500(api: Any) -> None:
    client = api.client()
    with pytest.raises(InvalidInput):
        client.request("POST", "/work_pools", body={"name": "", "type": "process"})
    with pytest.raises(InvalidInput):
        client.request("POST", "/deployments", body={"flow_name": "a/b", "name": "x", "entrypoint": "e",
                                                     "work_pool_name": "p"})
    with pytest.raises(InvalidInput):
        client.request("GET", "/flow_runs/not-a-uuid")
    with pytest.raises(InvalidInput):
        client.request("GET", "/flow_runs", params={"state": "BOGUS"})


def test_metrics_count_runs_by_state(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    for _ in range(2):
        client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    status, text = api.raw("GET", "/metrics")
    assert status == 200
    assert 'orch_flow_runs{state="SCHEDULED"} 2.0' in text
    assert 'orch_queue_depth{pool="local",queue="default"} 2.0' in text


def test_api_keys(database_url: str, tmp_path: Any) -> None:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path, database_url=database_url, server_api_keys="k1, k2")
    with live_server(settings, broker=MemoryBroker()) as server:
        assert server.client().request("GET", "/health") == {"status": "ok"}
        with pytest.raises(Unauthorized, match="missing API key"):
            server.client().list_work_pools()
        with pytest.raises(Unauthorized, match="invalid API key"):
            server.client(api_key="nope").list_work_pools()
        assert server.client(api_key="k2").list_work_pools() == []


def test_metrics_observe_dispatch_and_start_latency(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate())
    client.claim_flow_run(run.id, "w")
    client.set_flow_run_state(run.id, StateType.RUNNING)
    status, text = api.raw("GET", "/metrics")
    assert status == 200
    assert 'orch_dispatch_latency_seconds_count{pool="local"} 1.0' in text
    assert 'orch_start_latency_seconds_count{pool="local"} 1.0' in text


def test_paused_queue_holds_runs_and_resume_releases_them_at_once(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    client.update_work_queue("local", "default", schemas.WorkQueueUpdate(paused=True))
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    queue = run_queue("local", "default")
    assert api.broker.drain(queue, timeout=0.3) == []  # not published while paused
    with pytest.raises(Conflict, match="paused"):
        client.claim_flow_run(run.id, "w")  # even if a message were around
    client.update_work_queue("local", "default", schemas.WorkQueueUpdate(paused=False))
    assert api.broker.drain(queue, timeout=5) == [run.id]


def test_a_refused_claim_on_a_paused_pool_is_published_again_on_resume(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    queue = run_queue("local", "default")
    assert api.broker.drain(queue, timeout=2) == [run.id]
    client.update_work_pool("local", schemas.WorkPoolUpdate(paused=True))
    with pytest.raises(Conflict, match="paused"):
        client.claim_flow_run(run.id, "w")
    client.update_work_pool("local", schemas.WorkPoolUpdate(paused=False))
    # Published again right away, not after the re-publish window.
    assert api.broker.drain(queue, timeout=5) == [run.id]


def test_deleting_a_deployment_cancels_its_unstarted_runs(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    waiting = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    started = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    client.claim_flow_run(started.id, "w")
    client.delete_deployment(deployment.id)
    gone = client.read_flow_run(waiting.id)
    assert gone.state.type == StateType.CANCELLED and "deleted" in (gone.state.message or "")
    assert client.read_flow_run(started.id).state.type == StateType.PENDING


def test_explicit_null_for_a_required_field_is_422(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    for path, body in ((f"/deployments/{deployment.id}", {"paused": None}),
                       ("/work_pools/local", {"paused": None}),
                       ("/work_pools/local/queues/default", {"priority": None})):
        status, answer = api.raw("PATCH", path, body)
        assert status == 422, (path, answer)
    status, answer = api.raw("PATCH", f"/deployments/{deployment.id}", {"paused": None})
    assert answer["detail"][0]["loc"] == ["body", "paused"]


def test_scheduler_idempotency_keys_are_reserved(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    status, answer = api.raw("POST", f"/deployments/{deployment.id}/runs",
                             {"parameters": {"x": 1}, "idempotency_key": "scheduled:x:2030"})
    assert status == 422 and "belong to the scheduler" in str(answer)
    assert client.list_flow_runs().total == 0


def test_a_created_runs_answer_is_the_stored_run(api: Any) -> None:
    """The create answer is built from the columns written, not from a row read back: it must equal
    the run's own answer, field by field, for a new run and for a repeated idempotency key."""
    client = api.client()
    deployment = make_deployment(client, parameters={"x": 1, "y": 3}, job_variables={"env": {"A": "1"}})
    body = {"parameters": {"x": 9}, "tags": ["urgent"], "job_variables": {"working_dir": "/tmp"},
            "idempotency_key": "same", "scheduled_time": "2031-01-02T03:04:05.678901+00:00"}
    created = client.request("POST", f"/deployments/{deployment.id}/runs", body=body)
    assert created == client.request("GET", f"/flow_runs/{created['id']}")
    assert client.request("POST", f"/deployments/{deployment.id}/runs", body=body) == created
    due_now = client.request("POST", f"/deployments/{deployment.id}/runs", body={})
    assert due_now == client.request("GET", f"/flow_runs/{due_now['id']}")
