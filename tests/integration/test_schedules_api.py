"""Schedules through the REST API of a live server (its scheduler running), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.harness import wait_until


@pytest.fixture
def deployment(api: LiveServer) -> dict[str, Any]:
    assert api.raw("POST", "/work_pools", {"name": "p", "type": "process"})[0] == 201
    status, body = api.raw("POST", "/deployments", {
        "flow_name": "f", "name": "d", "entrypoint": "f.py:f", "work_pool_name": "p", "parameters": {"x": 1},
        "parameter_openapi_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
        "schedules": [{"interval": 3600, "slug": "hourly"}]})
    assert status == 201, body
    return body


def runs(api: LiveServer, deployment_id: str) -> list[dict[str, Any]]:
    status, page = api.raw("GET", f"/flow_runs?deployment_id={deployment_id}&limit=1000")
    assert status == 200
    return list(page["items"])


def test_deploying_with_schedules_creates_runs_ahead(api: LiveServer, deployment: dict[str, Any]) -> None:
    [schedule] = deployment["schedules"]
    assert (schedule["slug"], schedule["interval"], schedule["timezone"], schedule["active"]) == (
        "hourly", 3600.0, "UTC", True)
    created = wait_until("3 scheduled runs", lambda: len(runs(api, deployment["id"])) == 3 and runs(api, deployment["id"]),
                         15, 0.05)
    assert all(r["tags"] == ["auto-scheduled"] and r["state"]["name"] == "Scheduled" for r in created)
    status, listed = api.raw("GET", f"/deployments/{deployment['id']}/schedules")
    assert status == 200 and [s["slug"] for s in listed] == ["hourly"]


def test_schedule_routes_create_patch_delete(api: LiveServer, deployment: dict[str, Any]) -> None:
    base = f"/deployments/{deployment['id']}/schedules"
    status, nine = api.raw("POST", base, {"cron": "0 9 * * *", "timezone": "Europe/Berlin", "slug": "nine",
                                          "parameters": {"x": 9}})
    assert status == 201, nine
    assert (nine["cron"], nine["day_or"], nine["interval"]) == ("0 9 * * *", True, None)
    assert api.raw("POST", base, {"cron": "0 10 * * *", "slug": "nine"})[0] == 409
    wait_until("3 runs with x=9", lambda: sum(r["parameters"] == {"x": 9} for r in runs(api, deployment["id"])) == 3,
               15, 0.05)
    status, paused = api.raw("PATCH", f"{base}/nine", {"active": False})
    assert status == 200 and paused["active"] is False
    # The pause committed before the answer: its future runs are gone at once.
    assert not any(r["parameters"] == {"x": 9} for r in runs(api, deployment["id"]))
    assert api.raw("PATCH", f"{base}/{nine['id']}", {"active": True})[0] == 200  # by id works too
    wait_until("3 runs with x=9", lambda: sum(r["parameters"] == {"x": 9} for r in runs(api, deployment["id"])) == 3,
               15, 0.05)
    status, changed = api.raw("PATCH", f"{base}/nine", {"interval": "PT12H"})
    assert status == 200 and (changed["cron"], changed["interval"]) == (None, 43200.0)
    assert api.raw("DELETE", f"{base}/nine", None)[0] == 204
    assert not any(r["parameters"] == {"x": 9} for r in runs(api, deployment["id"]))
    assert api.raw("GET", f"{base}/nine")[0] == 404
    assert api.raw("DELETE", f"{base}/nine", None)[0] == 404


@pytest.mark.parametrize(("body", "reason"), [
    ({"cron": "61 * * * *", "slug": "bad"}, "schedule 'bad': cron expression '61 * * * *' is not valid"),
    ({"rrule": "FREQ=DAILY;COUNT=3"}, "rrule with COUNT needs a DTSTART line"),
    ({"interval": "P1M"}, "months and years have no fixed length"),
    ({"cron": "* * * * *", "timezone": "Nowhere/City"}, "unknown time zone 'Nowhere/City'"),
    ({"cron": "* * * * *", "parameters": {"x": "nine"}}, "parameter 'x': 'nine' is not of type 'integer'"),
    ({"cron": "* * * * *", "slug": "has space"}, "String should match pattern"),
    ({}, "exactly one of cron, interval or rrule"),
])
def test_bad_schedules_get_422_naming_the_schedule_and_reason(api: LiveServer, deployment: dict[str, Any],
                                                               body: dict[str, Any], reason: str) -> None:
    status, answer = api.raw("POST", f"/deployments/{deployment['id']}/schedules", body)
    assert status == 422, answer
    assert reason in str(answer["detail"])


def test_a_bad_schedule_in_a_deployment_is_refused_with_its_position(api: LiveServer,
                                                                     deployment: dict[str, Any]) -> None:
    status, answer = api.raw("POST", "/deployments", {
        "flow_name": "f", "name": "d2", "entrypoint": "f.py:f", "work_pool_name": "p",
        "schedules": [{"cron": "0 9 * * *"}, {"interval": 0, "slug": "zero"}]})
    assert status == 422
    [problem] = answer["detail"]
    assert problem["loc"] == ["body", "schedules", 1]
    assert "schedule 'zero': interval must be at least 1 second" in problem["msg"]
    status, answer = api.raw("POST", "/deployments", {
        "flow_name": "f", "name": "d2", "entrypoint": "f.py:f", "work_pool_name": "p",
        "schedules": [{"cron": "0 9 * * *", "slug": "a"}, {"cron": "0 10 * * *", "slug": "a"}]})
    assert status == 422 and "appears twice" in str(answer["detail"])


def test_backfill_route(api: LiveServer, deployment: dict[str, Any]) -> None:
    path = f"/deployments/{deployment['id']}/backfill"
    window = {"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T05:00:00Z"}
    assert api.raw("POST", path, window) == (200, {"created": 6, "existing": 0})
    assert api.raw("POST", path, window) == (200, {"created": 0, "existing": 6})
    status, answer = api.raw("POST", path, {"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"})
    assert status == 422 and "end is before start" in str(answer["detail"])
    status, answer = api.raw("POST", path, {"start": "2025-01-01T00:00:00", "end": "2025-01-02T00:00:00Z"})
    assert status == 422 and "timezone" in str(answer["detail"]).lower()
    assert api.raw("POST", path, {**window, "schedules": ["nope"]})[0] == 404
    status, answer = api.raw("POST", path, {"start": "2000-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"})
    assert status == 422 and "more than 10000 runs" in str(answer["detail"])


def test_catch_up_fields_round_trip(api: LiveServer, deployment: dict[str, Any]) -> None:
    assert (deployment["catchup"], deployment["max_late_runs"]) == ("ALL", None)
    status, updated = api.raw("PATCH", f"/deployments/{deployment['id']}", {"catchup": "LATEST", "max_late_runs": 5})
    assert status == 200 and (updated["catchup"], updated["max_late_runs"]) == ("LATEST", 5)
    status, answer = api.raw("PATCH", f"/deployments/{deployment['id']}", {"catchup": "SOMETIMES"})
    assert status == 422 and "catchup" in str(answer["detail"])


def test_unknown_deployment_is_404(api: LiveServer) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert api.raw("GET", f"/deployments/{missing}/schedules")[0] == 404
    assert api.raw("POST", f"/deployments/{missing}/schedules", {"cron": "* * * * *"})[0] == 404
    assert api.raw("POST", f"/deployments/{missing}/backfill",
                   {"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z"})[0] == 404
