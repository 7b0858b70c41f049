"""Input the database cannot hold is a 422 that names the problem, on SQLite and PostgreSQL alike:
numbers wider than their column, instants with no UTC equivalent, text with NUL characters or
unpaired surrogates (found by fuzzing the OpenAPI schema with schemathesis; each was a 500)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from orchestrator import schemas
from tests.integration.test_api import make_deployment

BIG = 2**40  # wider than an INTEGER column (32 bits on PostgreSQL)
HUGE = 2**100  # wider than any column
NUL = "a\x00b"
SURROGATE = "a\ud800b"  # json.dumps sends it as the escape "\ud800", which decodes to an unpaired surrogate
YEAR_1_EAST = "0001-01-01T00:00:00+05:00"  # before 0001-01-01 in UTC
YEAR_9999_WEST = "9999-12-31T23:00:00-05:00"  # after 9999-12-31 in UTC


@pytest.fixture
def world(api: Any) -> dict[str, str]:
    client = api.client()
    deployment = make_deployment(client)
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": 1}))
    return {"deployment": str(deployment.id), "run": str(run.id)}


def body_cases(world: dict[str, str]) -> list[tuple[str, str, Any, str]]:
    """(method, path, body, what the error must name)."""
    d, r = world["deployment"], world["run"]
    new_deployment = {"flow_name": "f", "name": "other", "entrypoint": "f.py:f", "work_pool_name": "local"}
    log = {"message": "m", "timestamp": "2030-01-01T00:00:00Z"}
    return [
        ("POST", "/work_pools/local/queues", {"name": "q", "priority": HUGE}, "priority"),
        ("POST", "/work_pools/local/queues", {"name": "q", "concurrency_limit": BIG}, "concurrency_limit"),
        ("PATCH", "/work_pools/local/queues/default", {"priority": BIG}, "priority"),
        ("POST", "/work_pools", {"name": "p2", "type": "process", "concurrency_limit": BIG}, "concurrency_limit"),
        ("PATCH", "/work_pools/local", {"concurrency_limit": BIG}, "concurrency_limit"),
        ("POST", "/deployments", {**new_deployment, "concurrency_limit": BIG}, "concurrency_limit"),
        ("POST", "/deployments", {**new_deployment, "concurrency_limit": {"limit": BIG}}, "limit"),
        ("POST", "/deployments", {**new_deployment, "max_late_runs": BIG}, "max_late_runs"),
        ("PATCH", f"/deployments/{d}", {"concurrency_limit": BIG}, "concurrency_limit"),
        ("POST", f"/flow_runs/{r}/logs", [{**log, "level": 2**64}], "level"),
        ("POST", f"/flow_runs/{r}/logs", [{**log, "timestamp": YEAR_1_EAST}], "timestamp"),
        ("POST", f"/flow_runs/{r}/logs", [{**log, "timestamp": YEAR_9999_WEST}], "timestamp"),
        ("POST", f"/flow_runs/{r}/logs", [{**log, "message": NUL}], "message"),
        ("POST", f"/flow_runs/{r}/logs", [{**log, "message": SURROGATE}], "message"),
        ("POST", f"/deployments/{d}/runs", {"scheduled_time": YEAR_1_EAST}, "scheduled_time"),
        ("POST", f"/deployments/{d}/runs", {"parameters": {"x": 1, "y": NUL}}, "parameters"),
        ("POST", f"/deployments/{d}/runs", {"parameters": {"x": 1, NUL: 2}}, "parameters"),
        ("POST", f"/deployments/{d}/runs", {"tags": [NUL]}, "tags"),
        ("POST", f"/deployments/{d}/runs", {"job_variables": {"env": {"A": SURROGATE}}}, "job_variables"),
        ("POST", f"/flow_runs/{r}/state", {"type": "SCHEDULED", "scheduled_time": YEAR_1_EAST}, "scheduled_time"),
        ("POST", f"/deployments/{d}/schedules", {"interval": 3600, "anchor_date": YEAR_1_EAST}, "anchor_date"),
        ("POST", "/work_pools", {"name": NUL, "type": "process"}, "name"),
        ("POST", "/work_pools", {"name": SURROGATE, "type": "process"}, "name"),
        ("POST", "/deployments", {**new_deployment, "description": NUL}, "description"),
    ]


def test_unstorable_bodies_are_422_naming_the_field(api: Any, world: dict[str, str]) -> None:
    client = api.client()
    runs_before = client.list_flow_runs().total
    for method, path, body, field in body_cases(world):
        status, answer = api.raw(method, path, body)
        assert status == 422, (method, path, body, status, answer)
        assert field in str(answer["detail"]), (method, path, answer)
    assert client.list_flow_runs().total == runs_before  # nothing half-written
    assert [q.name for q in client.list_work_queues("local")] == ["default"]
    assert [p.name for p in client.list_work_pools()] == ["local"]


@pytest.mark.parametrize("path", [
    "/flow_runs?offset=9223372036854775808",
    "/deployments?offset=9223372036854775808",
    "/flow_runs/{run}/logs?after=9223372036854775808",
])
def test_offsets_wider_than_64_bits_are_422(api: Any, world: dict[str, str], path: str) -> None:
    status, answer = api.raw("GET", path.format(**world))
    assert status == 422, answer
    assert "less than or equal to 9223372036854775807" in str(answer)


@pytest.mark.parametrize("path", [
    "/flow_runs?work_pool_name=%00x",
    "/flow_runs?tag=%00",
    "/deployments?flow_name=%00&tag=%00",
    "/work_pools/a%00b",
])
def test_a_nul_in_a_filter_or_path_is_422(api: Any, path: str) -> None:
    status, answer = api.raw("GET", path)
    assert status == 422, answer
    assert "NUL" in answer["detail"]


def test_a_naive_instant_is_read_as_utc(api: Any, world: dict[str, str]) -> None:
    client = api.client()
    status, run = api.raw("POST", f"/deployments/{world['deployment']}/runs", {"scheduled_time": "2030-01-01T12:00:00"})
    assert status == 201, run
    assert client.read_flow_run(run["id"]).expected_start_time == dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone.utc)
    status, answer = api.raw("POST", f"/flow_runs/{world['run']}/logs",
                             [{"message": "naive", "timestamp": "2030-01-01T12:00:00"}])
    assert status == 201, answer
    logs = client.request("GET", f"/flow_runs/{world['run']}/logs")
    assert [(entry["message"], entry["timestamp"][:19]) for entry in logs] == [("naive", "2030-01-01T12:00:00")]


def test_non_finite_numbers_are_422(api: Any, world: dict[str, str]) -> None:
    for value in (float("nan"), float("inf")):  # json.dumps writes NaN / Infinity, which Python's parser takes
        status, answer = api.raw("POST", f"/deployments/{world['deployment']}/runs", {"parameters": {"x": value}})
        assert status == 422, answer
        assert answer["detail"][0]["loc"] == ["body", "parameters"]
        assert "finite" in answer["detail"][0]["msg"]


@pytest.mark.parametrize(("schema", "says"), [
    ({"type": "nonsense"}, "'nonsense' is not valid"),
    ({"type": "object", "properties": {"x": {"type": "string", "pattern": "("}}}, "is not a 'regex'"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}, "$ref '#/$defs/missing'"),
    ({"type": "object", "properties": {"x": {"$ref": "https://schemas.invalid/x.json"}}}, "$ref 'https://"),
])
def test_a_parameter_schema_that_cannot_be_used_is_422(api: Any, world: dict[str, str], schema: dict[str, Any],
                                                        says: str) -> None:
    status, answer = api.raw("POST", "/deployments", {"flow_name": "f", "name": "d", "entrypoint": "f.py:f",
                                                      "work_pool_name": "local", "parameter_openapi_schema": schema})
    assert status == 422, answer
    assert answer["detail"][0]["loc"] == ["body", "parameter_openapi_schema"]
    assert says in answer["detail"][0]["msg"]


def test_a_schema_never_makes_the_server_fetch_a_url(api: Any) -> None:
    """jsonschema would retrieve a ``$ref`` to a URL by itself: any client could have the server
    request an address of its choosing. Here a listener on 127.0.0.1 counts what it is asked."""
    import http.server
    import threading

    asked: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, *args: Any) -> None:
            pass

    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    remote = f"http://127.0.0.1:{listener.server_address[1]}"
    try:
        client = api.client()
        make_deployment(client)  # the pool "local"
        # An $id moves the base of references, so this one is only looked up when a run is checked.
        schema = {"$id": f"{remote}/root.json", "type": "object", "properties": {"x": {"$ref": f"{remote}/x.json"}}}
        status, deployment = api.raw("POST", "/deployments", {
            "flow_name": "f", "name": "remote", "entrypoint": "f.py:f", "work_pool_name": "local",
            "parameter_openapi_schema": schema})
        assert status == 201, deployment
        status, answer = api.raw("POST", f"/deployments/{deployment['id']}/runs", {"parameters": {"x": "a"}})
        assert status == 422, answer
        assert f"$ref '{remote}/x.json'" in answer["detail"][0]["msg"]
        status, answer = api.raw("POST", "/work_pools", {"name": "remote", "type": "process", "base_job_template": {
            "job_configuration": {}, "variables": {"type": "object", "properties": {"v": {"$ref": f"{remote}/v.json"}}}}})
        assert status == 422, answer
        assert asked == []
    finally:
        listener.shutdown()
        listener.server_close()
