"""The create-run route's fast way (``api/fast_routes.py``): an ordinary create is answered there, and
every answer, served there or not, is the one FastAPI's own way gives, byte for byte.

FastAPI reads a body sent as ``application/<anything>+json`` exactly as one sent as
``application/json``; the fast way takes only the latter, so the two content types compare the two
ways on one server."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.middleware.errors import ServerErrorMiddleware

from orchestrator import schemas
from orchestrator.server.api.errors import RefuseNul
from orchestrator.server.api.fast_routes import FastRoutes
from orchestrator.server.api.lazy import LoadOnFirstRequest
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.conftest import LiveServer, live_server

FAST, ORDINARY = "application/json", "application/vnd.orch+json"
KEY = "fast-create-bootstrap-key"


def post(server: LiveServer, path: str, body: bytes, content_type: str | None,
         key: str | None = None) -> tuple[int, bytes, str]:
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {} if content_type is None else {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request("POST", url.path + path, body, headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("content-type", "")
    finally:
        connection.close()


def fast_way(server: LiveServer) -> FastRoutes:
    layer = server.app.middleware_stack  # built by the first request
    while not isinstance(layer, FastRoutes):
        layer = layer.app
    return layer


@contextlib.contextmanager
def open_and_closed(postgres_url: str, tmp_path: Path, **deployment: Any) -> Iterator[tuple[LiveServer, LiveServer, str]]:
    """An open server and one that takes only ``KEY``, one database, a pool ``p`` and a deployment of it
    (``deployment``: more of its fields); the deployment's id."""
    def settings(name: str, **more: Any) -> Settings:
        return Settings(home=tmp_path / name, database_url=postgres_url, api_url="http://unused/api", **more)

    with live_server(settings("open"), broker=MemoryBroker(), run_services=False) as open_, \
            live_server(settings("closed", server_api_keys=KEY), broker=MemoryBroker(), run_services=False) as closed:
        client = open_.client()
        client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
        created = client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p", **deployment))
        yield open_, closed, str(created.id)


@pytest.fixture
def servers(postgres_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer, str]]:
    """``open_and_closed``'s servers, and the path of its deployment's creates."""
    with open_and_closed(postgres_url, tmp_path, parameter_openapi_schema={
            "type": "object", "properties": {"n": {"type": "integer"}}}) as (open_, closed, deployment_id):
        yield open_, closed, f"/deployments/{deployment_id}/runs"


def test_an_ordinary_create_is_answered_by_the_fast_way_as_the_ordinary_way_answers_it(servers: Any) -> None:
    server, _, path = servers
    status, body, content_type = post(server, path, b'{"parameters": {"n": 1}, "tags": ["x"]}', FAST)
    fast = fast_way(server)
    assert (status, content_type, fast.served) == (201, "application/json", 1), body
    assert fast.hop.calls == 1  # the route called on the fast way's own threads (``Hop``)
    status_o, body_o, content_type_o = post(server, path, b'{"parameters": {"n": 1}, "tags": ["x"]}', ORDINARY)
    assert (status_o, content_type_o, fast.served) == (201, "application/json", 1), body_o
    run, ordinary = json.loads(body), json.loads(body_o)
    differ = {"id", "name", "created", "updated", "expected_start_time", "state", "dispatched_at"}
    assert {k: v for k, v in run.items() if k not in differ} == {k: v for k, v in ordinary.items() if k not in differ}
    assert run["parameters"] == {"n": 1} and run["tags"] == ["x"] and run["state"]["type"] == "SCHEDULED"
    # A repeated idempotency key: 200 with the run it made, whichever way made it.
    status, first, _ = post(server, path, b'{"idempotency_key": "k1"}', FAST)
    status_again, again, _ = post(server, path, b'{"idempotency_key": "k1"}', FAST)
    status_o, again_o, _ = post(server, path, b'{"idempotency_key": "k1"}', ORDINARY)
    assert (status, status_again, status_o) == (201, 200, 200)
    assert json.loads(first)["id"] == json.loads(again)["id"] == json.loads(again_o)["id"]
    assert fast.served == 3


@pytest.mark.parametrize("body", [
    b"{", b"", b"[]", b"null", b'{"tags": "x"}', b'{"unknown": 1}', b'{"tags": ["a\\u0000"]}',
    b'{"tags": ["\\ud800"]}', b'{"parameters": {"n": NaN}}', b'{"idempotency_key": "scheduled:x"}',
    b'{"scheduled_time": "yesterday"}', b'{"idempotency_key": "' + b"k" * 256 + b'"}', b"\xff\xfe{}",
])
def test_a_body_the_model_refuses_gets_fastapis_own_422(servers: Any, body: bytes) -> None:
    server, _, path = servers
    fast = post(server, path, body, FAST)
    assert fast[0] == 422, fast
    assert fast == post(server, path, body, ORDINARY)
    assert fast_way(server).served == 0


@pytest.mark.parametrize(("case", "body", "status"), [
    ("unknown deployment", b"{}", 404),
    ("queue not in the pool", b'{"work_queue_name": "nowhere"}', 422),
    ("parameter against the schema", b'{"parameters": {"n": "one"}}', 422),
])
def test_a_create_refused_after_its_body_is_read_gets_the_handlers_answer(servers: Any, case: str, body: bytes,
                                                                          status: int) -> None:
    server, _, path = servers
    if case == "unknown deployment":
        path = f"/deployments/{uuid.uuid4()}/runs"
    fast = post(server, path, body, FAST)
    assert fast[0] == status, fast
    assert fast == post(server, path, body, ORDINARY)
    assert fast_way(server).served == 1  # answered by the fast way, with the app's handler


def test_keys_are_checked_as_the_ordinary_way_checks_them(servers: Any) -> None:
    _, closed, path = servers
    for key in (None, "wrong"):
        fast = post(closed, path, b"{}", FAST, key)
        assert fast[0] == 401, fast
        assert fast == post(closed, path, b"{}", ORDINARY, key)
    assert closed.ctx.gate.failures_total["missing"] == 2  # each request counted once, either way
    assert closed.ctx.gate.failures_total["invalid"] == 2
    assert post(closed, path, b"{}", FAST, KEY)[0] == 201
    assert fast_way(closed).served == 3


def test_other_forms_of_the_request_go_the_ordinary_way(servers: Any) -> None:
    server, _, path = servers
    deployment = path.split("/")[2]
    assert post(server, path.replace(deployment, deployment.replace("-", "")), b"{}", FAST)[0] == 201
    assert post(server, path, b"{}", None)[0] == 422  # no content type: FastAPI reads no JSON
    assert post(server, path, b"{}", "text/plain")[0] == 422
    assert fast_way(server).served == 0


def test_the_fast_way_is_the_outermost_of_the_apps_own_layers_and_leaves_a_nul_to_refusenul(servers: Any) -> None:
    server, _, path = servers
    assert post(server, path, b"{}", FAST)[0] == 201  # the stack is built by the first request
    layers = []
    layer = server.app.middleware_stack
    while hasattr(layer, "app"):
        layers.append(type(layer))
        layer = layer.app
    # Outside the lazy routes' check and RefuseNul (nothing for them to do for a create it
    # serves: ~a sixth of the event loop's work a create), inside Starlette's and FastAPI's own.
    ours = [cls for cls in layers if cls in (FastRoutes, LoadOnFirstRequest, RefuseNul)]
    assert ours == [FastRoutes, LoadOnFirstRequest, RefuseNul]
    assert layers.index(FastRoutes) > layers.index(ServerErrorMiddleware)
    # A NUL in the query: RefuseNul's answer, as for any route, not the fast way's.
    status, body, _ = post(server, path + "?note=%00", b"{}", FAST)
    assert status == 422 and b"(in the path or a query parameter)" in body, body
    assert fast_way(server).served == 1
    assert post(server, path + "?note=plain", b"{}", FAST)[0] == 201 and fast_way(server).served == 2


def test_a_created_runs_answer_is_byte_for_byte_the_answer_for_its_repeated_key(servers: Any) -> None:
    """The 201 for a run just written (``flow_runs.created_json``: from the values written) and the
    200 for its repeated idempotency key (the model's JSON of the run read back) are the same bytes,
    either way of the route (secret job variables: test_secret_job_variables.py)."""
    server, _, path = servers
    body = (b'{"idempotency_key": "same", "parameters": {"n": 7}, "tags": ["z", "\\u00e9", "a"], '
            b'"job_variables": {"env": {"A": "1"}, "command": "run it"}}')
    for content_type in (FAST, ORDINARY):
        status, created, _ = post(server, path, body.replace(b"same", content_type.encode()), content_type)
        status_again, again, _ = post(server, path, body.replace(b"same", content_type.encode()), content_type)
        assert (status, status_again) == (201, 200), created
        assert created == again
        assert json.loads(created)["job_variables"] == {"env": {"A": "1"}, "command": "run it"}  # none secret
