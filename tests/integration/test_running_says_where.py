"""A flow-run process says where it runs with its RUNNING report, and its lease's first beat,
sent before that report (``opening``), costs the API no database work before its hold
(``api/routes/flow_runs.py``, ``services/transitions.py``: ``located``). SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.states import StateType
from tests.conftest import LiveServer
from tests.harness import statements_sent


@pytest.fixture
def claimed(api: LiveServer) -> uuid.UUID:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(
        schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p")
    )
    run_id = client.create_flow_run(deployment.id, schemas.FlowRunCreate()).id
    client.claim_flow_run(run_id, "w", pool="p")
    return run_id


def test_the_running_report_records_where_its_process_runs(api: LiveServer, claimed: uuid.UUID) -> None:
    client = api.client()
    answer = client.set_flow_run_running(
        claimed, worker_name="w", flow_version="v1", infrastructure_id="process:h:7"
    )
    assert (answer.state.type, answer.infrastructure_id, answer.flow_version) == (
        StateType.RUNNING,
        "process:h:7",
        "v1",
    )
    assert client.read_flow_run(claimed).infrastructure_id == "process:h:7"


def test_a_report_without_it_keeps_what_the_run_has(api: LiveServer, claimed: uuid.UUID) -> None:
    """A worker's own infrastructure report (Docker, Kubernetes) is not undone by a RUNNING report
    that says nothing of it (an older SDK's, or a process that does not know where it runs)."""
    client = api.client()
    client.report_infrastructure(claimed, "container:abc")
    assert client.set_flow_run_running(claimed, worker_name="w").infrastructure_id == "container:abc"


def test_an_opening_beat_sends_no_statement_before_its_hold(api: LiveServer, claimed: uuid.UUID) -> None:
    """Its statements are the read after the hold only; a held beat without ``opening`` (an older
    SDK's first beat) reads the PENDING run first, as before."""
    client = api.client()

    def statements(opening: bool) -> tuple[list[str], Any]:
        with statements_sent(api.ctx.engine) as sent:
            answer = client.open_flow_run_heartbeat(claimed, hold=0.05, opening=opening).answer()
        return [s.statement for s in sent], answer

    plain, plain_answer = statements(opening=False)
    opening, opening_answer = statements(opening=True)
    assert len(plain) == 2 and opening == plain[1:]
    assert opening_answer == plain_answer and opening_answer["state"]["type"] == "PENDING"
    assert client.read_flow_run(claimed).heartbeat_at is None  # nothing written for a PENDING run, as before


def test_a_place_longer_than_its_column_is_refused_by_name_on_every_route(api: LiveServer,
                                                                          claimed: uuid.UUID) -> None:
    """The column holds 255 characters: every route that takes ``infrastructure_id`` refuses a longer
    one with a 422 naming it (on PostgreSQL it was a database error's text for 256-1,000 characters,
    and SQLite stored it), and the run keeps where it runs."""
    from orchestrator.errors import InvalidInput

    client = api.client()
    client.report_infrastructure(claimed, "x" * 255)
    too_long = "y" * 256
    for report in (lambda: client.report_infrastructure(claimed, too_long),
                   lambda: client.request("POST", f"/flow_runs/{claimed}/heartbeat",
                                          params={"infrastructure_id": too_long}),
                   lambda: client.set_flow_run_running(claimed, worker_name="w", infrastructure_id=too_long)):
        with pytest.raises(InvalidInput, match="infrastructure_id.*255 characters"):
            report()
    run = client.read_flow_run(claimed)
    client.close()
    assert (run.state.type, run.infrastructure_id) == (StateType.PENDING, "x" * 255)
