"""A run path's round trips. A heartbeat (services/transitions.py: heartbeat): a flow-run process
beats as it starts, while its run is still PENDING, beside the claim and its own RUNNING report;
that beat only reads the run. The statements of a run's path are kept per shape. SQLite and
PostgreSQL. On PostgreSQL, the requests whose one write is one statement -- the infrastructure
report, a heartbeat, a dropped lease's lapse -- send no BEGIN nor COMMIT (``AppContext.single_write``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import event, select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, flow_runs, work_pools
from orchestrator.states import StateType
from tests.conftest import LiveServer
from tests.harness import statements_sent


@pytest.fixture
def run_id(sessions: Any) -> uuid.UUID:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
        return run.id


def _statements_of(sessions: Any, work: Any) -> list[str]:
    """The statements ``work(session)`` sent, in one transaction."""
    with sessions.begin() as session, statements_sent(session.get_bind()) as sent:
        work(session)
    return [s.statement for s in sent]


def test_the_first_beat_of_a_pending_run_only_reads_it(sessions: Any, run_id: uuid.UUID) -> None:
    """One read, no write: a PENDING run's heartbeat is not recorded (services/transitions.py)."""
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
    answers: list[Any] = []
    statements = _statements_of(sessions, lambda session: answers.append(flow_runs.heartbeat(session, run_id)))
    assert [(a.state_type, a.heartbeat_at) for a in answers] == [(StateType.PENDING, None)]
    assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT"), statements


def test_the_first_beat_that_says_where_its_process_runs_sets_it_in_one_statement(sessions: Any,
                                                                                run_id: uuid.UUID) -> None:
    """A process worker's forked flow-run process says where it runs with its first beat, in place
    of its worker's infrastructure report: one UPDATE ... RETURNING, the beat's one statement."""
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
    answers: list[Any] = []
    statements = _statements_of(sessions, lambda session: answers.append(
        flow_runs.heartbeat(session, run_id, infrastructure_id="process:h:41")))
    assert [(a.state_type, a.infrastructure_id, a.heartbeat_at) for a in answers] == [
        (StateType.PENDING, "process:h:41", None)]
    assert len(statements) == 1 and statements[0].lstrip().startswith("UPDATE"), statements
    with sessions() as session:
        assert session.scalar(select(m.FlowRun.infrastructure_id).where(m.FlowRun.id == run_id)) == "process:h:41"


def test_a_beat_never_replaces_where_a_run_was_started_nor_touches_a_final_run(sessions: Any, run_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
        flow_runs.set_infrastructure(session, run_id, "process:h:1")
    with sessions.begin() as session:
        assert flow_runs.heartbeat(session, run_id, infrastructure_id="process:h:2").infrastructure_id == "process:h:1"
    with sessions.begin() as session:
        flow_runs.transition(session, run_id, StateType.RUNNING)
        flow_runs.transition(session, run_id, StateType.COMPLETED)
    other = _second_run(sessions)
    with sessions.begin() as session:
        flow_runs.claim(session, other, "w")
        flow_runs.transition(session, other, StateType.RUNNING)
        flow_runs.transition(session, other, StateType.COMPLETED)
    with sessions.begin() as session:
        assert flow_runs.heartbeat(session, other, infrastructure_id="process:h:3").infrastructure_id is None


def _second_run(sessions: Any) -> uuid.UUID:
    with sessions.begin() as session:
        deployment = session.scalar(select(m.Deployment))
        run, _ = flow_runs.create(session, deployment.id, schemas.FlowRunCreate())
        return run.id


def test_a_beat_of_a_running_run_writes_its_heartbeat_and_answers_it(sessions: Any, run_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        flow_runs.claim(session, run_id, "w")
    with sessions.begin() as session:
        flow_runs.transition(session, run_id, StateType.RUNNING)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with sessions.begin() as session:
        answer = flow_runs.heartbeat(session, run_id, now=at)
        assert answer.state_type == StateType.RUNNING and answer.heartbeat_at == at
    with sessions() as session:
        assert session.scalar(select(m.FlowRun.heartbeat_at).where(m.FlowRun.id == run_id)) == at


def test_a_runs_path_executes_the_same_statements_for_every_run(sessions: Any) -> None:
    """The claim, the state reports, the heartbeat and the infrastructure report of a second run,
    by another worker, execute the statement objects the first run's did (their values are bind
    parameters, services/run_statements.py): nothing of them is built or keyed again."""
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        runs = [flow_runs.create(session, deployment.id, schemas.FlowRunCreate())[0].id for _ in range(2)]

    def path(run_id: uuid.UUID, worker: str) -> list[Any]:
        executed: list[Any] = []
        for step in (lambda s: flow_runs.claim(s, run_id, worker),
                     lambda s: flow_runs.set_infrastructure(s, run_id, f"process:{worker}"),
                     lambda s: flow_runs.set_state(s, run_id, schemas.StateCreate(
                         type=StateType.RUNNING, worker_name=worker, flow_version=worker)),
                     lambda s: flow_runs.heartbeat(s, run_id),
                     lambda s: flow_runs.set_state(s, run_id, schemas.StateCreate(
                         type=StateType.COMPLETED, worker_name=worker, result={"by": worker}))):
            with sessions.begin() as session:
                event.listen(session, "do_orm_execute", lambda state: executed.append(state.statement))
                step(session)
        return [s for s in executed if s.is_dml]  # the writes: the run's updates, its state rows

    first, second = path(runs[0], "w1"), path(runs[1], "w2")
    assert len(first) == len(second) >= 5  # the updates of the run (and on SQLite its state rows)
    assert all(a is b for a, b in zip(first, second, strict=True)), [str(a) for a, b in zip(first, second) if a is not b]
    with sessions() as session:
        done = {r.id: (r.state_type, r.worker_name, r.infrastructure_id, r.flow_version, r.result, r.run_count)
                for r in session.scalars(select(m.FlowRun).where(m.FlowRun.id.in_(runs)))}
    assert done == {runs[0]: (StateType.COMPLETED, "w1", "process:w1", "w1", {"by": "w1"}, 1),
                    runs[1]: (StateType.COMPLETED, "w2", "process:w2", "w2", {"by": "w2"}, 1)}


@pytest.fixture
def postgres_api(postgres_url: str, tmp_path: Any) -> Any:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:  # nothing else sends
        yield server


def test_the_run_paths_single_statement_requests_are_their_own_transactions(postgres_api: LiveServer) -> None:
    """The infrastructure report, a PENDING and a RUNNING heartbeat (held: its answer is read again),
    and the lapse of a dropped heartbeat's lease: each statement in autocommit, no BEGIN or COMMIT
    round trip; each wrote what it did before, and the connection went back to the pool transactional."""
    from orchestrator.server.services import leases

    api = postgres_api
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p"))
    run_id = client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id
    client.claim_flow_run(run_id, "w", pool="p")

    def sent_by(work: Any) -> list[tuple[str, bool]]:
        with statements_sent(api.ctx.engine) as sent:
            work()
        return [(s.statement.split()[0], s.autocommit) for s in sent]

    assert sent_by(lambda: client.report_infrastructure(run_id, "process:1")) == [("UPDATE", True)]
    assert sent_by(lambda: client.flow_run_heartbeat(run_id)) == [("SELECT", True)]  # PENDING: only read
    client.set_flow_run_state(run_id, StateType.RUNNING, worker_name="w")
    beats: list[Any] = []
    assert sent_by(lambda: beats.append(client.flow_run_heartbeat(run_id, hold=0.01))) == [
        ("SELECT", True), ("UPDATE", True), ("SELECT", True)]  # the beat, then the answer read after the hold
    assert sent_by(lambda: api.ctx.client_gone(leases.RunHolder(run_id))) == [("UPDATE", True)]

    assert (beats[0].state.type, beats[0].infrastructure_id) == (StateType.RUNNING, "process:1")
    with api.ctx.sessions() as session:
        connection = session.connection().connection.dbapi_connection
        assert connection.autocommit is False
        heartbeat_at = session.scalar(select(m.FlowRun.heartbeat_at).where(m.FlowRun.id == run_id))
    assert heartbeat_at is not None and heartbeat_at < beats[0].heartbeat_at  # lapsed: backdated


def test_a_single_write_commits_its_session_only_when_that_does_more(postgres_api: LiveServer) -> None:
    """Its statements are committed already (autocommit): a create-run, a heartbeat, a report end
    without SQLAlchemy's commit (no ``after_commit``); a session holding ORM changes, or a mark an
    after-commit hook reads, is still committed: the changes written, the hook called."""
    from orchestrator.server.db.session import on_commit

    api = postgres_api
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p"))
    commits: list[bool] = []
    hooked: list[str] = []

    def committed(_session: Any) -> None:
        commits.append(True)

    event.listen(api.ctx.sessions, "after_commit", committed)
    remove_hook = on_commit(api.ctx.sessions, "test.marked", lambda: hooked.append("called"))
    try:
        run_id = client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id
        client.claim_flow_run(run_id, "w", pool="p")
        commits.clear()
        client.report_infrastructure(run_id, "process:1")
        client.flow_run_heartbeat(run_id)
        second = client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id
        assert commits == []  # each statement was its own transaction: nothing left to commit
        with api.ctx.single_write() as session:
            session.add(m.Flow(name="added"))
        with api.ctx.single_write() as session:
            session.info["test.marked"] = True
        assert len(commits) == 2 and hooked == ["called"]
    finally:
        remove_hook()
        event.remove(api.ctx.sessions, "after_commit", committed)
    with api.ctx.sessions() as session:
        assert session.scalar(select(m.FlowRun.infrastructure_id).where(m.FlowRun.id == run_id)) == "process:1"
        assert session.scalar(select(m.FlowRun.id).where(m.FlowRun.id == second)) == second
        assert session.scalar(select(m.Flow.name).where(m.Flow.name == "added")) == "added"
