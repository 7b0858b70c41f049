"""A create uses what it knows of its deployment, pool and queue only while those rows are unchanged
(``services/create_targets.py``): every change between two creates shows in the second run, or in
its refusal; and on PostgreSQL a create with a kept target is one statement outside a transaction,
leaving its pooled connection as it found it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from orchestrator import schemas
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.server.db import models as m
from tests.conftest import LiveServer
from tests.harness import statements_sent


def _dispatched(api: LiveServer, run_id: Any) -> bool:
    with api.ctx.sessions() as session:
        return session.scalar(select(m.FlowRun.dispatched_at).where(m.FlowRun.id == run_id)) is not None


def _kept_target(client: Any) -> Any:
    """A deployment on pool "p" whose target the server keeps: one run created on it already."""
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p"))
    client.create_flow_run(deployment.id, schemas.FlowRunCreate())  # reads the target and keeps it
    return deployment


def test_every_change_between_two_creates_shows_in_the_second(api: LiveServer) -> None:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p", parameters={"x": 1}, tags=["a"]))
    first = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    assert first.parameters == {"x": 1} and first.tags == ["a"] and _dispatched(api, first.id)

    client.update_deployment(deployment.id, schemas.DeploymentUpdate(parameters={"x": 2}, tags=["b"]))
    second = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    assert second.parameters == {"x": 2} and second.tags == ["b"]

    client.update_work_pool("p", schemas.WorkPoolUpdate(paused=True))
    paused = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    assert not _dispatched(api, paused.id)  # left to the dispatcher, which holds it while paused
    client.update_work_pool("p", schemas.WorkPoolUpdate(paused=False))
    assert _dispatched(api, client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id)

    # A queue the pool does not have is refused; once created, it is taken (the refusal was not kept).
    with pytest.raises(InvalidInput, match="work queue 'late' not in pool 'p'"):
        client.create_flow_run(deployment.id, schemas.FlowRunCreate(work_queue_name="late"))
    client.create_work_queue("p", schemas.WorkQueueCreate(name="late"))
    late = client.create_flow_run(deployment.id, schemas.FlowRunCreate(work_queue_name="late"))
    assert late.work_queue_name == "late"

    client.delete_deployment(deployment.id)
    with pytest.raises(NotFound):
        client.create_flow_run(deployment.id, schemas.FlowRunCreate())


def test_a_create_with_a_kept_target_is_one_statement_without_a_transaction(postgres_api: LiveServer) -> None:
    api = postgres_api
    client = api.client()
    deployment = _kept_target(client)
    with statements_sent(api.ctx.engine) as sent:
        run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
        # the run, its state and its event; no SELECT, BEGIN nor COMMIT
        assert [(s.statement.split()[0], s.autocommit) for s in sent] == [("WITH", True)]
        # A refused create runs the same way and leaves nothing behind either.
        with pytest.raises(InvalidInput):
            client.create_flow_run(deployment.id, schemas.FlowRunCreate(work_queue_name="nowhere"))
    assert client.read_flow_run(run.id).id == run.id
    # The connection went back to the pool transactional: a rolled-back write is gone.
    with api.ctx.sessions() as session:
        assert session.connection().connection.dbapi_connection.autocommit is False
        session.execute(text("UPDATE flow_runs SET name = 'changed' WHERE id = :id"), {"id": run.id})
        session.rollback()
    assert client.read_flow_run(run.id).name == run.name


def test_a_creates_statement_goes_to_the_driver_as_compiled_once(postgres_api: LiveServer) -> None:
    """The run's statement is compiled once per process and sent with ``exec_driver_sql``: no
    per-create processing of a ``text()`` by SQLAlchemy, whose events still see it."""
    from sqlalchemy import event

    client = postgres_api.client()
    deployment = _kept_target(client)
    sent: list[tuple[str, bool]] = []

    def seen(_connection: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool) -> None:
        sent.append((statement.split()[0], context.compiled is None))

    event.listen(postgres_api.ctx.engine, "before_cursor_execute", seen)
    try:
        run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": "50%"}, tags=["t"]))
    finally:
        event.remove(postgres_api.ctx.engine, "before_cursor_execute", seen)
    assert sent == [("WITH", True)]
    assert client.read_flow_run(run.id).model_dump() == run.model_dump()  # written as answered (a % in a value too)


def test_an_ordinary_create_makes_no_orm_session_one_with_a_repeated_key_does(postgres_api: LiveServer) -> None:
    """On PostgreSQL the route writes on a Core connection (``AppContext.one_write``): an ordinary
    create begins no ORM session; a repeated idempotency key (the existing run is read through the
    ORM) makes one on that connection and answers 200 with that run. Either way the connection goes
    back to the pool out of autocommit."""
    from sqlalchemy import event

    api = postgres_api
    client = api.client()
    deployment = _kept_target(client)
    begun: list[Any] = []

    def began(session: Any, _transaction: Any, _connection: Any) -> None:
        begun.append(session)

    event.listen(api.ctx.sessions, "after_begin", began)
    try:
        status, run = api.raw("POST", f"/deployments/{deployment.id}/runs", {"parameters": {}})
        assert status == 201 and begun == []
        first_status, first = api.raw("POST", f"/deployments/{deployment.id}/runs", {"idempotency_key": "k"})
        again_status, again = api.raw("POST", f"/deployments/{deployment.id}/runs", {"idempotency_key": "k"})
    finally:
        event.remove(api.ctx.sessions, "after_begin", began)
    assert (first_status, again_status) == (201, 200) and again == first and again["id"] != run["id"]
    assert begun  # the existing run was read through an ORM session
    assert client.read_flow_run(run["id"]).model_dump(mode="json") == run
    with api.ctx.sessions() as session:  # LIFO: the connection the creates gave back
        assert session.connection().connection.dbapi_connection.autocommit is False


def test_a_create_on_a_lost_connection_answers_503_and_the_next_is_written(postgres_api: LiveServer,
                                                                          postgres_url: str) -> None:
    """The create writes on a Core connection of its own (``AppContext.one_write``): a connection
    PostgreSQL dropped is invalidated, the create answers 503 (clients retry it) and the next one is
    written on a new connection."""
    api = postgres_api
    client = api.client()
    deployment = _kept_target(client)
    import psycopg

    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as admin:  # not the server's pool
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    status, body = api.raw("POST", f"/deployments/{deployment.id}/runs", {})
    assert status == 503, body
    status, run = api.raw("POST", f"/deployments/{deployment.id}/runs", {})
    assert status == 201
    assert str(client.read_flow_run(run["id"]).id) == run["id"]


@pytest.fixture
def postgres_api(postgres_url: str, tmp_path: Any) -> Any:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def _template(required: bool) -> dict[str, Any]:
    """A pool's job template whose ``image`` variable has no default; ``required``: a run needs it."""
    variables: dict[str, Any] = {"type": "object", "properties": {"image": {"type": "string"}}}
    if required:
        variables["required"] = ["image"]
    return {"job_configuration": {"image": "{{ image }}"}, "variables": variables}


def test_job_variables_are_checked_once_per_kept_target_and_again_when_it_changes(
        postgres_api: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.server.services import deployments as deployment_service

    checks: list[dict[str, Any]] = []  # the values each job variables check was given (the real check runs)
    real_check = deployment_service.validate_job_variables
    monkeypatch.setattr(deployment_service, "validate_job_variables",
                        lambda template, values, **kw: (checks.append(values), real_check(template, values, **kw)))
    client = postgres_api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process", base_job_template=_template(False)))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p"))
    checks.clear()
    for _ in range(3):
        client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    assert len(checks) == 1  # the first create checked the pool's and the deployment's values; the others kept it

    # A run's own job variables are checked at every create.
    client.create_flow_run(deployment.id, schemas.FlowRunCreate(job_variables={"image": "a"}))
    with pytest.raises(InvalidInput, match="image"):
        client.create_flow_run(deployment.id, schemas.FlowRunCreate(job_variables={"image": 5}))
    # (the refusal twice: one made on a kept target is made again on the rows read afresh)
    assert checks == [{}, {"image": "a"}, {"image": 5}, {"image": 5}]

    # The pool now requires the variable: the target changed, so the next create is checked, and refused.
    client.update_work_pool("p", schemas.WorkPoolUpdate(base_job_template=_template(True)))
    for _ in range(2):  # refused again: a refusal is never remembered as a pass
        with pytest.raises(InvalidInput, match="job variable 'image' is required by work pool 'p'"):
            client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    # The deployment gives it: checked again (the values it changed), then kept again.
    client.update_deployment(deployment.id, schemas.DeploymentUpdate(job_variables={"image": "b"}))
    checks.clear()
    runs = [client.create_flow_run(deployment.id, schemas.FlowRunCreate())]
    assert checks[-1] == {"image": "b"}
    checks.clear()
    runs += [client.create_flow_run(deployment.id, schemas.FlowRunCreate()) for _ in range(2)]
    assert checks == [] and all(run.job_variables == {} for run in runs)
