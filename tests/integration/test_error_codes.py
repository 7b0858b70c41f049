"""Errors keep their type on the wire: every error body is ``{"detail", "code"}`` with the status of
``orchestrator.server.api.errors.STATUS``, and the client raises the very class the server raised, on a
live server over SQLite and PostgreSQL (the ``api`` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.errors import (
    WIRE_ERRORS,
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotClaimableNow,
    NotFound,
    NotTheApi,
    OrchestratorError,
    ServiceUnavailable,
    SlotUnavailable,
    Unauthorized,
)
from orchestrator.server.api.errors import STATUS
from orchestrator.settings import Settings
from orchestrator.states import StateType
from tests.conftest import free_port, live_server
from tests.worker_runs import deploy, new_run
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration


def raising_route(api: Any) -> None:
    """A route of the live app that raises the class whose code it is given, as a route or a
    service would: what the API answers is then its error handling alone."""

    async def raise_error(code: str) -> None:
        raise WIRE_ERRORS[code](f"raised as {code}")

    api.app.add_api_route("/api/test-errors/{code}", raise_error, methods=["GET"])


@pytest.mark.parametrize("code", sorted(WIRE_ERRORS))
def test_every_wire_error_keeps_its_code_status_and_class(api: Any, code: str) -> None:
    raising_route(api)
    cls = WIRE_ERRORS[code]

    status, body = api.raw("GET", f"/test-errors/{code}")
    fields = cls(f"raised as {code}").answer_fields()  # a class's own, e.g. worker_name_taken's timings
    assert (status, body) == (STATUS[cls], {"detail": f"raised as {code}", "code": code, **fields})

    with pytest.raises(OrchestratorError) as raised:
        api.client().request("GET", f"/test-errors/{code}")
    assert type(raised.value) is cls
    assert raised.value.detail == f"raised as {code}"


def test_errors_raised_by_the_services_arrive_as_their_class(api: Any) -> None:
    client = api.client()
    pool = client.create_work_pool(schemas.WorkPoolCreate(name="limited", type="process", concurrency_limit=1))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(
        flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name=pool.name))

    def raised(call: Any) -> OrchestratorError:
        with pytest.raises(OrchestratorError) as info:
            call()
        return info.value

    assert type(raised(lambda: client.read_flow_run(uuid.uuid4()))) is NotFound
    assert type(raised(lambda: client.create_work_pool(schemas.WorkPoolCreate(name="limited", type="process")))) \
        is Conflict
    invalid = raised(lambda: client.request("POST", "/work_pools", body={"name": 5}))
    assert type(invalid) is InvalidInput and invalid.detail[0]["loc"] == ["body", "name"]

    first, second = (client.create_flow_run(deployment.id, schemas.FlowRunCreate()) for _ in range(2))
    client.claim_flow_run(first.id, "w1")
    assert type(raised(lambda: client.claim_flow_run(second.id, "w2"))) is SlotUnavailable
    assert type(raised(lambda: client.claim_flow_run(first.id, "w2"))) is InvalidTransition
    client.update_work_pool(pool.name, schemas.WorkPoolUpdate(paused=True))
    assert type(raised(lambda: client.claim_flow_run(second.id, "w2"))) is NotClaimableNow

    client.set_flow_run_state(first.id, StateType.RUNNING, worker_name="w1")
    client.set_flow_run_state(first.id, StateType.COMPLETED, worker_name="w1")
    too_late = raised(lambda: client.set_flow_run_state(first.id, StateType.FAILED, worker_name="w1"))
    assert type(too_late) is InvalidTransition
    assert isinstance(too_late, Conflict)  # an `except Conflict` still catches it
    status, body = api.raw("POST", f"/flow_runs/{first.id}/cancel")
    assert status == 409 and body["code"] == "invalid_transition"


def test_the_frameworks_own_answers_carry_a_code(api: Any) -> None:
    status, body = api.raw("GET", "/no-such-route")
    assert (status, body) == (404, {"detail": "Not Found", "code": "route_not_found"})
    status, body = api.raw("DELETE", "/health")
    assert (status, body) == (405, {"detail": "Method Not Allowed", "code": "method_not_allowed"})
    status, body = api.raw("POST", "/work_pools", {"name": "x", "concurrency_limit": "many"})
    assert status == 422 and body["code"] == "invalid_input"
    assert body["detail"][0]["loc"] == ["body", "concurrency_limit"]
    status, body = api.raw("GET", "/work_pools/a%00b")
    assert status == 422 and body["code"] == "invalid_input"

    # A resource's 404 is NotFound; a route's is NotTheApi, with the reason.
    client = api.client()
    with pytest.raises(NotFound):
        client.read_work_pool("missing")
    with pytest.raises(NotTheApi, match=r"has no route GET /api/no-such-route \(is the server older\?\)"):
        client.request("GET", "/no-such-route")


def test_unauthorized_and_service_unavailable_carry_their_code(tmp_path: Path, sqlite_url: str) -> None:
    broker_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=broker_url,
                        server_api_keys="k1", api_url="http://unused/api")
    with live_server(settings, run_services=False) as server:
        status, body = server.raw("GET", "/work_pools")
        assert (status, body["code"]) == (401, "unauthorized")
        with pytest.raises(Unauthorized) as denied:
            server.client().list_work_pools()
        assert type(denied.value) is Unauthorized

        status, body = server.raw("GET", "/broker")
        assert (status, body["code"]) == (503, "service_unavailable")
        with pytest.raises(ServiceUnavailable) as down:
            server.client(api_key="k1").read_broker()
        assert type(down.value) is ServiceUnavailable


FLOWS_PY = '''\
from pathlib import Path

from orchestrator import flow


@flow
def must_not_run(marker: str) -> None:
    Path(marker).write_text("the flow ran")
'''


def test_the_engine_does_not_start_a_run_cancelled_before_it_reports_running(worker_api: Any,
                                                                              tmp_path: Path) -> None:
    """The engine's ``except InvalidTransition`` around its RUNNING report, for real: the run is
    claimed, then cancelled before its flow-run process reports; the process must see the refusal
    as an InvalidTransition (not any Conflict), not run the flow, and exit 0 (the worker settles
    nothing: the run is already CANCELLED)."""
    client: Client = worker_api.client()
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    marker = tmp_path / "marker"
    run = new_run(client, deploy(client, pool, flows, "must_not_run", {}), parameters={"marker": str(marker)})
    worker = ProcessWorker(client, pool=pool, name="w-cancelled", api_url=worker_api.url, prewarm=False)
    client.claim_flow_run(run.id, worker.name, pool)
    assert client.cancel_flow_run(run.id).state.type == StateType.CANCELLED  # not started: at once

    process = subprocess.run([sys.executable, "-m", "orchestrator.engine"], cwd=flows, capture_output=True,
                             text=True, timeout=120, env={**os.environ, **worker.run_environment(run.id)})

    assert process.returncode == 0, process.stdout + process.stderr
    assert f"not starting: flow run {run.id} is CANCELLED" in process.stdout + process.stderr
    assert not marker.exists()
    assert client.read_flow_run(run.id).state.type == StateType.CANCELLED
