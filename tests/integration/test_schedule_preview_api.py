"""POST /api/deployments/{id}/schedules/preview: a schedule's next times before it is added (the
UI's "Add a schedule" shows them), with the same checks as adding it, and nothing stored."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from tests.conftest import LiveServer


@pytest.fixture
def deployment(api: LiveServer) -> dict[str, Any]:
    assert api.raw("POST", "/work_pools", {"name": "p", "type": "process"})[0] == 201
    status, body = api.raw("POST", "/deployments", {
        "flow_name": "f", "name": "d", "entrypoint": "f.py:f", "work_pool_name": "p",
        "parameter_openapi_schema": {"type": "object", "properties": {"x": {"type": "integer"}}}})
    assert status == 201, body
    return body


def test_preview_gives_the_next_times_in_the_zone_and_stores_nothing(api: LiveServer,
                                                                     deployment: dict[str, Any]) -> None:
    base = f"/deployments/{deployment['id']}/schedules"
    status, preview = api.raw("POST", f"{base}/preview?count=7",
                              {"cron": "30 6 * * *", "timezone": "Europe/Paris"})
    assert status == 200, preview
    times = [dt.datetime.fromisoformat(t) for t in preview["next"]]
    assert len(times) == 7 and times == sorted(times)
    assert all((t.hour, t.minute) == (6, 30) and t.utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2))
               for t in times)
    assert times[0] > dt.datetime.now(dt.UTC)
    assert [b - a for a, b in itertools.pairwise(times)].count(dt.timedelta(days=1)) >= 5
    assert preview["timezone"] == "Europe/Paris" and "30 6 * * *" in preview["description"]
    assert preview["slug"].startswith("cron-")

    status, hourly = api.raw("POST", f"{base}/preview", {"interval": "PT1H"})
    assert status == 200 and len(hourly["next"]) == 5
    steps = {dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a) for a, b in itertools.pairwise(hourly["next"])}
    assert steps == {dt.timedelta(hours=1)}
    status, rrule = api.raw("POST", f"{base}/preview?count=3", {"rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0"})
    assert status == 200 and all(dt.datetime.fromisoformat(t).weekday() == 0 for t in rrule["next"])

    assert api.raw("GET", base)[1] == []  # nothing stored


@pytest.mark.parametrize(("body", "says"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"interval": "soon"}, "interval"),
    ({}, "exactly one of cron, interval or rrule"),
    ({"cron": "0 9 * * *", "parameters": {"x": "nine"}}, "x"),
])
def test_preview_refuses_what_adding_would(api: LiveServer, deployment: dict[str, Any], body: dict[str, Any],
                                           says: str) -> None:
    status, answer = api.raw("POST", f"/deployments/{deployment['id']}/schedules/preview", body)
    assert status == 422, answer
    assert says in str(answer["detail"])


def test_preview_limits(api: LiveServer, deployment: dict[str, Any]) -> None:
    base = f"/deployments/{deployment['id']}/schedules/preview"
    assert api.raw("POST", f"{base}?count=0", {"cron": "0 9 * * *"})[0] == 422
    assert api.raw("POST", f"{base}?count=51", {"cron": "0 9 * * *"})[0] == 422
    assert api.raw("POST", "/deployments/00000000-0000-0000-0000-000000000000/schedules/preview",
                   {"cron": "0 9 * * *"})[0] == 404
