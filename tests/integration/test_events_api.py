"""Reading events by pages (GET /api/events, POST /api/events/filter), retention and the event
counters, on SQLite and PostgreSQL through a live API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from orchestrator.schemas.event_queries import EventFilter
from orchestrator.schemas.events import EventIn, related, resource
from orchestrator.server.retention import Ages, Retention
from orchestrator.server.services import event_pages, events
from tests.conftest import LiveServer

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # in the past: an event at most an hour ahead is accepted


def ok(answer: tuple[int, Any]) -> Any:
    status, body = answer
    assert status < 300, body
    return body


def emit(api: LiveServer, *batch: dict[str, Any]) -> None:
    ok(api.raw("POST", "/events", [{"occurred": T0.isoformat(), **e} for e in batch]))


def names(api: LiveServer, where: dict[str, Any], limit: int = 100) -> list[str]:
    page = ok(api.raw("POST", "/events/filter", {"filter": {"order": "ASC", **where}, "limit": limit}))
    return [e["payload"]["n"] for e in page["events"]]


def sample(api: LiveServer) -> None:
    run, deployment = f"orchestrator.flow-run.{uuid.uuid4()}", f"orchestrator.deployment.{uuid.uuid4()}"
    emit(api,
         {"event": "orchestrator.flow-run.Running", "payload": {"n": "a"},
          "resource": resource(run, "brave-otter", env="prod"),
          "related": [related("deployment", deployment, "nightly", team="data"), related("tag", "orchestrator.tag.etl")]},
         {"event": "orchestrator.flow-run.Completed", "payload": {"n": "b"}, "occurred": (T0 + dt.timedelta(1)).isoformat(),
          "resource": resource(run, "brave-otter", env="dev"), "related": [related("deployment", deployment)]},
         {"event": "my.app.Upload", "payload": {"n": "c"}, "resource": resource("my.bucket.1")},
         {"event": "my.app.Upload_x", "payload": {"n": "d"}, "resource": resource("my.bucket_2", env="prod")})


def test_every_filter(api: LiveServer) -> None:
    sample(api)
    assert names(api, {}) == ["a", "c", "d", "b"]  # (occurred, storage order)
    assert names(api, {"event": {"name": ["orchestrator.flow-run.*"]}}) == ["a", "b"]
    assert names(api, {"event": {"name": ["prefect.flow-run.Completed"]}}) == ["b"]  # Prefect's names mean ours
    assert names(api, {"event": {"name": ["my.app.Upload"]}}) == ["c"]  # exact: _ is no wildcard
    assert names(api, {"event": {"name": ["*Upload_x"], "prefix": ["orchestrator.flow-run.Comp"]}}) == ["d", "b"]
    assert names(api, {"event": {"exclude_prefix": ["my."], "exclude_name": ["*.Running"]}}) == ["b"]
    assert names(api, {"event": {"name": ["MY.*"]}}) == []  # case-sensitive on both databases
    assert names(api, {"resource": {"id": ["my.bucket_*"]}}) == ["d"]
    assert names(api, {"resource": {"id_prefix": ["prefect.flow-run."]}}) == ["a", "b"]
    assert names(api, {"resource": {"labels": {"env": "prod"}}}) == ["a", "d"]
    assert names(api, {"resource": {"labels": {"env": "!prod"}}}) == ["b"]  # no env label: no match
    assert names(api, {"resource": {"labels": {"env": ["dev", "pr*"]}}}) == ["a", "d", "b"]
    assert names(api, {"resource": {"labels": {"prefect.resource.name": "brave-*", "env": "d*"}}}) == ["b"]
    assert names(api, {"related": {"role": ["tag"]}}) == ["a"]
    assert names(api, {"related": {"id": ["orchestrator.deployment.*"]}}) == ["a", "b"]
    assert names(api, {"related": {"id_prefix": ["prefect.deployment."], "labels": {"team": "data"}}}) == ["a"]
    assert names(api, {"related": {"role": ["tag"], "labels": {"team": "data"}}}) == []  # one resource, all parts
    assert names(api, {"any_resource": {"id": ["orchestrator.tag.etl", "my.bucket.1"]}}) == ["a", "c"]
    assert names(api, {"any_resource": {"labels": {"team": "*"}}}) == ["a"]
    assert names(api, {"occurred": {"since": (T0 + dt.timedelta(hours=1)).isoformat()}}) == ["b"]
    assert names(api, {"occurred": {"until": T0.isoformat()}}) == ["a", "c", "d"]


def test_the_get_form(api: LiveServer) -> None:
    sample(api)

    def get(query: str) -> list[str]:
        return [e["payload"]["n"] for e in ok(api.raw("GET", f"/events?order=ASC&{query}"))["events"]]

    assert get("event=orchestrator.flow-run.*&event=my.app.Upload") == ["a", "c", "b"]
    assert get("resource=my.*") == ["c", "d"]
    assert get("related=orchestrator.tag.etl") == ["a"]
    assert get("label=env=prod&label=env=dev&event=prefect.flow-run.*") == ["a", "b"]
    assert get("label=env=!prod") == ["b"]
    assert get(f"since={(T0 + dt.timedelta(hours=1)).isoformat().replace('+', '%2B')}") == ["b"]
    assert [e["payload"]["n"] for e in ok(api.raw("GET", "/events"))["events"]] == ["b", "d", "c", "a"]  # DESC


@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_keyset_pages_neither_repeat_nor_skip_with_equal_instants(api: LiveServer, order: str) -> None:
    emit(api, *({"event": "x.y", "payload": {"n": i}, "resource": resource("r.1")} for i in range(23)))
    seen: list[int] = []
    page: str | None = None
    for turn in range(10):
        body = ok(api.raw("POST", "/events/filter", {"filter": {"order": order}, "limit": 5, "page": page}))
        seen += [e["payload"]["n"] for e in body["events"]]
        if turn == 1:  # written while paging: later pages stay where they were
            emit(api, {"event": "x.y", "payload": {"n": 99}, "resource": resource("r.1"),
                       "occurred": (T0 + dt.timedelta(days=1 if order == "ASC" else -1)).isoformat()})
        page = body["next_page"]
        if page is None:
            break
    expected = list(range(23)) if order == "ASC" else list(range(22, -1, -1))
    assert seen == expected + [99]


def test_a_filter_checked_in_python_pages_through_everything(api: LiveServer) -> None:
    deployment = "orchestrator.deployment.1"
    emit(api, *({"event": "x.y", "payload": {"n": i}, "resource": resource("r.1"),
                 "related": [related("deployment", deployment, team="a" if i % 3 else "b")]} for i in range(30)))
    where = {"order": "ASC", "related": {"labels": {"team": "b"}}}
    seen, page = [], None
    while True:
        body = ok(api.raw("POST", "/events/filter", {"filter": where, "limit": 4, "page": page}))
        seen += [e["payload"]["n"] for e in body["events"]]
        if (page := body["next_page"]) is None:
            break
    assert seen == list(range(0, 30, 3))


@pytest.mark.parametrize(("method", "path", "body", "named"), [
    ("POST", "/events/filter", {"filter": {"bogus": 1}}, "bogus"),
    ("POST", "/events/filter", {"filter": {"resource": {"idd": ["x"]}}}, "idd"),
    ("POST", "/events/filter", {"filter": {}, "limit": 5000}, "limit"),
    ("POST", "/events/filter", {"filter": {"event": {"name": ["a\u0000b"]}}}, "NUL"),
    ("POST", "/events/filter", {"filter": {"event": {"name": ["x" * 2000]}}}, "name"),
    ("POST", "/events/filter", {"filter": {"event": {"name": ["x"] * 101}}}, "name"),
    ("POST", "/events/filter", {"filter": {}, "page": "garbage"}, "page"),
    ("POST", "/events/filter", {"filter": {"order": "UP"}}, "order"),
    ("GET", "/events?page=garbage", None, "page"),
    ("GET", "/events?label=novalue", None, "label"),
    ("GET", "/events?since=yesterday", None, "since"),
    ("GET", "/events?event=" + "x" * 2000, None, "event"),
    ("GET", "/events/stream?after=7:bad", None, "cursor"),
])
def test_bad_input_is_a_422_naming_it(api: LiveServer, method: str, path: str, body: Any, named: str) -> None:
    status, answer = api.raw(method, path, body)
    assert status == 422, answer
    assert named in str(answer)


def test_an_event_from_far_ahead_is_a_422_naming_occurred(api: LiveServer) -> None:
    now = dt.datetime.now(dt.UTC)
    fine = {"event": "x.ahead", "resource": resource("r.ahead"), "occurred": (now + dt.timedelta(minutes=30)).isoformat()}
    assert ok(api.raw("POST", "/events", [fine])) == {"recorded": 1}
    for occurred in ("3000-01-01T00:00:00Z", (now + dt.timedelta(hours=2)).isoformat()):
        status, answer = api.raw("POST", "/events", [fine, {**fine, "occurred": occurred}])
        assert status == 422, answer
        assert answer["detail"][0]["loc"] == ["body", 1, "occurred"]
        assert "more than 60 minutes after the server's clock" in answer["detail"][0]["msg"]


def _old(i: int, days: float) -> EventIn:
    return EventIn(event="x.y", occurred=dt.datetime.now(dt.UTC) - dt.timedelta(days=days),
                   resource=resource(f"r.{i}"), related=[related("tag", "orchestrator.tag.t")])


def test_retention_deletes_old_events_in_batches(sessions: Any) -> None:
    with sessions.begin() as session:
        events.record(session, [_old(i, 10) for i in range(7)] + [_old(100, 1)])
    counts = events.Counts()
    retention = Retention(sessions, Ages(events=dt.timedelta(days=7)), counts, batch=3)
    retention.step()
    assert retention.batches == 3 and counts.deleted_total == 7
    with sessions() as session:
        kept = event_pages.read_page(session, EventFilter(), 50)
        assert [e.resource["orchestrator.resource.id"] for e in kept.events] == ["r.100"]
        from sqlalchemy import func, select

        from orchestrator.server.db import models as m
        assert session.scalar(select(func.count()).select_from(m.EventResource)) == 1


def test_counters_on_metrics(api: LiveServer) -> None:
    batch = [{"id": str(uuid.uuid4()), "event": "x.y", "resource": resource("r.1")} for _ in range(3)]
    ok(api.raw("POST", "/events", batch))
    ok(api.raw("POST", "/events", batch[:2]))
    text = ok(api.raw("GET", "/metrics"))
    assert "orch_events_received_total 5.0" in text
    assert "orch_events_recorded_total 3.0" in text
    assert "orch_events_dropped_total 2.0" in text
    assert "orch_events_deleted_total 0.0" in text
