"""The run path's other routes on the fast way (``api/fast_routes.py``): the worker's claim and the
state reports are answered there when ordinary, and every answer, served there or not, is the one
FastAPI's own way gives, byte for byte (the create's own: test_create_run_fast.py).

As there, a body sent as ``application/vnd.orch+json`` is read by FastAPI exactly as one sent as
``application/json``, which alone the fast way takes: the two content types compare the two ways on
one server. A request that changes a run is compared on two twin runs, one each way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.server.api.fast_routes import FastRoutes
from tests.conftest import LiveServer
from tests.integration.test_create_run_fast import FAST, KEY, ORDINARY, open_and_closed, post

WAYS = (FAST, ORDINARY)
CLAIM = b'{"worker_name": "w1", "pool": "p"}'
# What differs between two twin runs, or between two moments.
DIFFER = {"id", "name", "created", "updated", "expected_start_time", "start_time", "end_time", "state",
          "dispatched_at", "heartbeat_at", "api_key", "total_run_time", "estimated_run_time"}


def fast_way(server: LiveServer) -> FastRoutes:
    layer = server.app.middleware_stack  # built by the first request
    while not isinstance(layer, FastRoutes):
        layer = layer.app
    return layer


def alike(answer: bytes) -> dict[str, Any]:
    """A run's answer (or a claim's) without what differs between twins; the state's type and name."""
    found = json.loads(answer)
    run = found.get("flow_run", found)
    kept = {key: value for key, value in run.items() if key not in DIFFER}
    kept["state"] = (run["state"]["type"], run["state"]["name"])
    if "flow_run" in found:
        return {"flow_run": kept, **{key: value for key, value in found.items() if key not in ("flow_run", "api_key")}}
    return kept


class Twins:
    """An open server and one that takes only ``KEY`` (one database), and fresh runs to walk."""

    def __init__(self, open_: LiveServer, closed: LiveServer, deployment: str) -> None:
        self.open, self.closed, self.deployment = open_, closed, deployment

    def run(self, state: str = "SCHEDULED") -> str:
        """A new run's path in the API (``/flow_runs/{id}``), walked to ``state``."""
        status, body, _ = post(self.open, f"/deployments/{self.deployment}/runs", b"{}", FAST)
        assert status == 201, body
        path = f"/flow_runs/{json.loads(body)['id']}"
        for step, body in (("PENDING", CLAIM), ("RUNNING", b'{"type": "RUNNING"}')):
            if state == "SCHEDULED" or (state == "PENDING" and step == "RUNNING"):
                break
            status, answer, _ = post(self.open, path + ("/claim" if step == "PENDING" else "/state"), body, ORDINARY)
            assert status in (200, 201), answer
        return path


@pytest.fixture
def twins(postgres_url: str, tmp_path: Path) -> Iterator[Twins]:
    with open_and_closed(postgres_url, tmp_path) as (open_, closed, deployment_id):
        yield Twins(open_, closed, deployment_id)


def test_a_claim_and_the_state_reports_of_a_run_are_answered_by_the_fast_way_as_the_ordinary_way_answers_them(
        twins: Twins) -> None:
    server = twins.open
    answers: dict[str, list[tuple[int, bytes, str]]] = {way: [] for way in WAYS}
    for way in WAYS:
        path = twins.run()
        answers[way].append(post(server, path + "/claim", CLAIM, way))
        answers[way].append(post(server, path + "/state?infrastructure_id=pid%3A%C3%A9-1",
                                 b'{"type": "RUNNING", "flow_version": "v1"}', way))
        answers[way].append(post(server, path + "/state", b'{"type": "COMPLETED", "message": "done"}', way))
    for fast, ordinary in zip(answers[FAST], answers[ORDINARY], strict=True):
        assert (fast[0], fast[2]) == (ordinary[0], ordinary[2]) == (fast[0], "application/json"), (fast, ordinary)
        assert alike(fast[1]) == alike(ordinary[1])
    assert [status for status, _, _ in answers[FAST]] == [200, 201, 201]
    running = json.loads(answers[FAST][1][1])
    assert (running["infrastructure_id"], running["flow_version"]) == ("pid:é-1", "v1")
    fast = fast_way(server)
    assert fast.served_routes == {"create_flow_run": 2, "claim_flow_run": 1, "set_flow_run_state": 2}
    assert fast.hop.calls == 5  # every one called on the fast way's own threads (``Hop``)


@pytest.mark.parametrize(("case", "route", "body"), [
    ("claimed by another worker", "/claim", b'{"worker_name": "w2", "pool": "p"}'),
    ("another pool", "/claim", b'{"worker_name": "w1", "pool": "elsewhere"}'),
    ("not allowed from SCHEDULED", "/state", b'{"type": "COMPLETED"}'),
    ("unknown run", "/claim", CLAIM),
    ("unknown run", "/state", b'{"type": "RUNNING"}'),
])
def test_a_request_refused_after_its_body_is_read_gets_the_handlers_answer(twins: Twins, case: str, route: str,
                                                                           body: bytes) -> None:
    path = twins.run("PENDING" if case == "claimed by another worker" else "SCHEDULED")
    if case == "unknown run":
        path = "/flow_runs/00000000-0000-4000-8000-000000000000"
    fast = post(twins.open, path + route, body, FAST)
    assert fast[0] in (404, 409), fast
    assert fast == post(twins.open, path + route, body, ORDINARY)
    assert fast_way(twins.open).served == 2  # the run's create, and this one (with the app's handler)


@pytest.mark.parametrize(("route", "body"), [
    ("/claim", b"{"), ("/claim", b""), ("/claim", b"[]"), ("/claim", b'{"worker_name": ""}'),
    ("/claim", b'{"worker_name": "w", "unknown": 1}'), ("/claim", b'{"worker_name": "a\\u0000"}'),
    ("/claim", b'{"worker_name": "\\ud800"}'), ("/state", b"{}"), ("/state", b'{"type": "NOPE"}'),
    ("/state", b'{"type": "RUNNING", "result": NaN}'), ("/state", b'{"type": "RUNNING", "name": "' + b"n" * 65 + b'"}'),
    ("/state", b'{"type": "SCHEDULED", "scheduled_time": "soon"}'), ("/state", b"\xff\xfe{}"),
])
def test_a_body_the_model_refuses_gets_fastapis_own_422(twins: Twins, route: str, body: bytes) -> None:
    path = twins.run()
    fast = post(twins.open, path + route, body, FAST)
    assert fast[0] == 422, fast
    assert fast == post(twins.open, path + route, body, ORDINARY)
    assert fast_way(twins.open).served_routes == {"create_flow_run": 1}


@pytest.mark.parametrize(("query", "status"), [
    ("infrastructure_id=", 422), ("infrastructure_id=" + "x" * 256, 422), ("infrastructure_id=%00", 422),
    ("infrastructure_id", 422), ("infrastructure_id=ok&infrastructure_id=", 422),
    ("infrastructure_id=&infrastructure_id=" + "x" * 255, 201),  # the last one, as Starlette reads it
    ("infrastructure_id=%20spaced%20+", 201), ("other=1", 201), ("INFRASTRUCTURE_ID=no", 201),
])
def test_query_parameters_are_read_and_checked_as_fastapi_reads_and_checks_them(twins: Twins, query: str,
                                                                                status: int) -> None:
    found = {way: post(twins.open, twins.run("PENDING") + "/state?" + query, b'{"type": "RUNNING"}', way)
             for way in WAYS}
    assert found[FAST][0] == found[ORDINARY][0] == status, found
    if status == 201:  # twin runs: alike
        assert alike(found[FAST][1]) == alike(found[ORDINARY][1])
    else:  # FastAPI's 422 (RefuseNul's for the NUL), the same bytes
        assert found[FAST] == found[ORDINARY]
    assert fast_way(twins.open).served_routes["set_flow_run_state"] == (status == 201)


def test_keys_are_checked_as_the_ordinary_way_checks_them_a_runs_own_key_for_its_own_run_alone(
        twins: Twins) -> None:
    closed = twins.closed
    mine, other = twins.run(), twins.run("PENDING")
    for key in (None, "wrong"):
        fast = post(closed, mine + "/claim", CLAIM, FAST, key)
        assert fast[0] == 401, fast
        assert fast == post(closed, mine + "/claim", CLAIM, ORDINARY, key)
    status, claim, _ = post(closed, mine + "/claim", CLAIM, FAST, KEY)
    assert status == 200, claim
    run_key = json.loads(claim)["api_key"]
    # The run's own key reports its own run (the path's id is checked against it) and no other's.
    fast = post(closed, other + "/state", b'{"type": "RUNNING"}', FAST, run_key)
    assert fast[0] == 403, fast
    assert fast == post(closed, other + "/state", b'{"type": "RUNNING"}', ORDINARY, run_key)
    status, body, _ = post(closed, mine + "/state", b'{"type": "RUNNING"}', FAST, run_key)
    assert status == 201, body
    assert fast_way(closed).served_routes == {"claim_flow_run": 3, "set_flow_run_state": 2}


def test_other_forms_of_the_request_go_the_ordinary_way(twins: Twins) -> None:
    path = twins.run()
    run_id = path.rsplit("/", 1)[1]
    assert post(twins.open, path.replace(run_id, run_id.replace("-", "")) + "/claim", CLAIM, FAST)[0] == 200
    assert post(twins.open, path + "/state", b'{"type": "RUNNING"}', None)[0] == 422  # no content type
    assert post(twins.open, path + "/state", b'{"type": "RUNNING"}', "text/plain")[0] == 422
    assert fast_way(twins.open).served_routes == {"create_flow_run": 1}
