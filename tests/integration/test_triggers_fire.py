"""Automations fire on a live server (SQLite and PostgreSQL): events in through the API, the
trigger service evaluates them, the actions happen -- each checked in the database."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.conftest import LiveServer, live_server
from tests.harness import wait_until

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "id": {"type": "string"},
                                           "when": {"type": "string"}, "text": {"type": "string"}}}


@pytest.fixture
def target(api: LiveServer) -> dict[str, Any]:
    api.client().create_work_pool(schemas.WorkPoolCreate(name="local", type="process"))
    code, body = api.raw("POST", "/deployments", {
        "flow_name": "etl", "name": "target", "entrypoint": "flows.py:etl", "work_pool_name": "local",
        "parameter_openapi_schema": SCHEMA, "enforce_parameter_schema": True})
    assert code < 300, body
    return body  # type: ignore[no-any-return]


def _automation(api: LiveServer, trigger: dict[str, Any], actions: list[dict[str, Any]], name: str = "auto") -> str:
    code, body = api.raw("POST", "/automations", {"name": name, "trigger": trigger, "actions": actions})
    assert code == 201, body
    return str(body["id"])


def _event(name: str, resource: str = "my.thing", **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "event": name, "resource": {"orchestrator.resource.id": resource}, **fields}


def _named(api: LiveServer, name: str) -> list[m.Event]:
    with api.ctx.sessions() as session:
        return list(session.scalars(select(m.Event).where(m.Event.event == name).order_by(m.Event.seq)))


def _runs(api: LiveServer, deployment_id: str) -> list[m.FlowRun]:
    with api.ctx.sessions() as session:
        return list(session.scalars(select(m.FlowRun).where(m.FlowRun.deployment_id == uuid.UUID(deployment_id))))


def _evaluated(api: LiveServer, count: int) -> None:
    """Wait until the trigger service has evaluated ``count`` events that some trigger covered."""
    service = api.app.state.triggers
    wait_until(f"{count} events evaluated", lambda: service.evaluated >= count, 20)


def test_run_deployment_with_templated_parameters_keeping_their_types(api: LiveServer,
                                                                     target: dict[str, Any]) -> None:
    _automation(api, {"expect": ["file.landed"]}, [{
        "type": "run-deployment", "deployment_id": target["id"],
        "parameters": {"n": "{{ event.payload.size }}", "id": "{{ event.id }}", "when": "{{ event.occurred }}",
                       "text": "size {{ event.payload.size }} of {{ event.resource.id }}"}}])
    sent = _event("file.landed", "s3.bucket.a", payload={"size": 3}, occurred="2026-05-01T10:00:00+00:00")
    api.client().emit_events([sent])
    runs = wait_until("the triggered run", lambda: _runs(api, target["id"]), 20)
    assert runs[0].parameters == {"n": 3, "id": sent["id"], "when": "2026-05-01T10:00:00+00:00",
                                  "text": "size 3 of s3.bucket.a"}
    assert runs[0].idempotency_key.startswith("automation ")
    triggered = _named(api, "orchestrator.automation.triggered")
    assert len(triggered) == 1 and triggered[0].payload["triggering_event"]["id"] == sent["id"]
    executed = wait_until("executed", lambda: _named(api, "orchestrator.automation.action.executed"), 10)
    assert executed[0].payload["flow_run_id"] == str(runs[0].id)


def test_a_failing_action_is_recorded_with_its_reason(api: LiveServer, target: dict[str, Any]) -> None:
    _automation(api, {"expect": ["file.landed"]}, [
        {"type": "run-deployment", "deployment_id": target["id"], "parameters": {"n": "{{ event.payload.name }}"}},
        {"type": "emit-event", "event": "still.ran", "resource": {"orchestrator.resource.id": "x"}}])
    api.client().emit_events([_event("file.landed", payload={"name": "not-a-number"})])
    failed = wait_until("failed", lambda: _named(api, "orchestrator.automation.action.failed"), 20)
    assert "n" in failed[0].payload["reason"] and failed[0].payload["action_index"] == 0
    assert _runs(api, target["id"]) == []
    assert wait_until("the next action ran", lambda: _named(api, "still.ran"), 10)


def test_duplicate_event_ids_are_evaluated_once(api: LiveServer, target: dict[str, Any]) -> None:
    _automation(api, {"expect": ["file.landed"]}, [{"type": "run-deployment", "deployment_id": target["id"]}])
    sent = _event("file.landed")
    client = api.client()
    client.emit_events([sent])
    client.emit_events([sent, sent])
    client.emit_events([_event("marker")])
    wait_until("the marker stored", lambda: _named(api, "marker"), 10)
    wait_until("one run", lambda: _runs(api, target["id"]), 20)
    _evaluated(api, 1)
    assert len(_runs(api, target["id"])) == 1


def test_an_event_that_arrives_before_the_one_it_follows_waits_for_it(api: LiveServer, target: dict[str, Any]) -> None:
    _automation(api, {"after": ["run.started"], "expect": ["run.finished"], "within": 60},
                [{"type": "run-deployment", "deployment_id": target["id"]}])
    leader = _event("run.started", occurred="2026-05-01T10:00:00+00:00")
    follower = _event("run.finished", occurred="2026-05-01T10:00:05+00:00", follows=leader["id"])
    client = api.client()
    client.emit_events([follower])  # without waiting, no window would be open for it: ignored

    def held() -> int | None:
        with api.ctx.sessions() as session:
            return session.scalar(select(m.AutomationHeldEvent.event_seq))
    wait_until("held", held, 10)
    assert _runs(api, target["id"]) == []
    client.emit_events([leader])
    assert len(wait_until("the run", lambda: _runs(api, target["id"]), 20)) == 1


def test_compound_all_fires_once_both_fired(api: LiveServer, target: dict[str, Any]) -> None:
    _automation(api, {"type": "compound", "require": "all", "within": 300,
                      "triggers": [{"expect": ["a.done"]}, {"expect": ["b.done"]}]},
                [{"type": "run-deployment", "deployment_id": target["id"]}])
    client = api.client()
    client.emit_events([_event("a.done"), _event("a.done")])
    _evaluated(api, 2)
    assert _runs(api, target["id"]) == []
    client.emit_events([_event("b.done")])
    assert len(wait_until("the run", lambda: _runs(api, target["id"]), 20)) == 1


def test_proactive_fires_when_nothing_came_within_the_window(api: LiveServer, target: dict[str, Any]) -> None:
    began = dt.datetime.now(dt.timezone.utc)
    _automation(api, {"expect": ["heartbeat"], "posture": "Proactive", "within": 10},
                [{"type": "run-deployment", "deployment_id": target["id"]}])
    runs = wait_until("the proactive firing", lambda: _runs(api, target["id"]), 25)
    assert runs[0].created - began >= dt.timedelta(seconds=9.5)


def test_pause_resume_and_cancel_actions(api: LiveServer, target: dict[str, Any]) -> None:
    client = api.client()
    client.create_work_queue("local", schemas.WorkQueueCreate(name="slow"))
    _automation(api, {"expect": ["stop.all"]}, [
        {"type": "pause-deployment", "deployment_id": target["id"]},
        {"type": "pause-work-pool", "work_pool_name": "local"},
        {"type": "pause-work-queue", "work_pool_name": "local", "work_queue_name": "slow"}], name="stop")
    _automation(api, {"expect": ["go.all"]}, [
        {"type": "resume-deployment", "deployment_id": target["id"]},
        {"type": "resume-work-pool", "work_pool_name": "local"}], name="go")
    _automation(api, {"expect": ["orchestrator.flow-run.Scheduled"]}, [{"type": "cancel-flow-run"}], name="cancel")
    client.emit_events([_event("stop.all")])

    def paused() -> bool:
        with api.ctx.sessions() as session:
            queue = session.scalar(select(m.WorkQueue).where(m.WorkQueue.name == "slow"))
            return bool(session.get(m.Deployment, uuid.UUID(target["id"])).paused
                        and session.scalar(select(m.WorkPool.paused)) and queue and queue.paused)
    wait_until("paused", paused, 20)
    client.emit_events([_event("go.all")])
    wait_until("resumed", lambda: not paused() and not client.read_work_pool("local").paused, 20)
    run = client.create_flow_run(uuid.UUID(target["id"]), schemas.FlowRunCreate())
    wait_until("cancelled", lambda: client.read_flow_run(run.id).state.type == "CANCELLED", 20)


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: list[tuple[str, dict[str, str], str]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"] or 0)).decode()
        _Receiver.got.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"thanks")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.got = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_emit_event_and_call_webhook_actions(api: LiveServer, target: dict[str, Any], receiver: str) -> None:
    _automation(api, {"expect": ["file.landed"]}, [
        {"type": "emit-event", "event": "file.{{ event.payload.kind }}", "resource": {
            "orchestrator.resource.id": "copy.{{ event.resource.id }}"}, "payload": {"size": "{{ event.payload.size }}"}},
        {"type": "call-webhook", "url": receiver + "/hook/{{ event.payload.kind }}",
         "headers": {"X-Kind": "{{ event.payload.kind }}"}, "body": {"size": "{{ event.payload.size }}"}}])
    api.client().emit_events([_event("file.landed", "s3.a", payload={"kind": "csv", "size": 7})])
    emitted = wait_until("emitted", lambda: _named(api, "file.csv"), 20)
    assert emitted[0].resource["orchestrator.resource.id"] == "copy.s3.a" and emitted[0].payload == {"size": 7}
    wait_until("the call", lambda: _Receiver.got, 20)
    path, headers, body = _Receiver.got[0]
    assert path == "/hook/csv" and headers["X-Kind"] == "csv" and json.loads(body) == {"size": "7"}
    assert headers["Idempotency-Key"].startswith("automation ")
    executed = wait_until("recorded", lambda: [e for e in _named(api, "orchestrator.automation.action.executed")
                                               if e.payload["action_type"] == "call-webhook"], 20)
    assert executed[0].payload["status_code"] == 200 and len(_Receiver.got) == 1


class _Refuser(http.server.BaseHTTPRequestHandler):
    """Answers 500 with a body holding a NUL character, as a broken endpoint might."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"] or 0))
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"broken\x00body")

    def log_message(self, *args: Any) -> None:
        pass


def test_failure_reasons_holding_a_nul_are_recorded_escaped_and_evaluation_goes_on(
        api: LiveServer, target: dict[str, Any]) -> None:
    # A template can render a NUL (the database stores none), and an endpoint can answer one: the
    # .failed event keeps the text escaped; before, the pass (or the call's outcome) failed validation.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _automation(api, {"expect": ["file.landed"]}, [
            {"type": "emit-event", "event": "odd.{{ '%c'|format(0) }}", "resource": {"orchestrator.resource.id": "x"}},
            {"type": "run-deployment", "deployment_id": target["id"], "parameters": {"text": "{{ '%c'|format(0) }}"}},
            {"type": "call-webhook", "url": f"http://127.0.0.1:{server.server_address[1]}/"}])
        _automation(api, {"expect": ["next.one"]}, [{"type": "emit-event", "event": "still.evaluating",
                                                      "resource": {"orchestrator.resource.id": "y"}}], name="next")
        api.client().emit_events([_event("file.landed")])
        def three_failures() -> list[m.Event] | None:
            rows = _named(api, "orchestrator.automation.action.failed")
            return rows if len(rows) == 3 else None

        failed = wait_until("three failures", three_failures, 20)
        by_index = {e.payload["action_index"]: e.payload for e in failed}
        assert by_index[2]["status_code"] == 500 and by_index[2]["response_body"] == "broken\\x00body"
        assert all("\x00" not in json.dumps(p, ensure_ascii=False) for p in by_index.values())
        assert _runs(api, target["id"]) == []
        api.client().emit_events([_event("next.one")])
        assert wait_until("the next automation fired", lambda: _named(api, "still.evaluating"), 20)
    finally:
        server.shutdown()
        server.server_close()


def test_calls_left_by_a_stopped_server_are_made_or_given_up_by_the_next(
        database_url: str, tmp_path: Path, receiver: str) -> None:
    # The caller starts only when needed (a firing queued a call, or calls are left to make): a server
    # started over calls another one left -- one pending, one claimed by it an hour ago and never
    # answered -- makes the first and records the second as failed, without any automation of its own.
    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api")
    firing, automation = uuid.uuid4(), uuid.uuid4()
    with live_server(settings, broker=MemoryBroker(), run_services=False) as stopped:  # migrates; no services
        assert stopped.app.state.triggers.caller is None
        with stopped.ctx.sessions.begin() as session:
            request = {"url": receiver + "/left", "method": "POST", "headers": {}, "body": "{}", "timeout_seconds": 10,
                       "idempotency_key": "automation left"}
            session.add(m.AutomationCall(firing_id=firing, action_index=0, automation_id=automation, state="pending",
                                         request=request, context={"automation_name": "gone"}))
            session.add(m.AutomationCall(firing_id=firing, action_index=1, automation_id=automation, state="calling",
                                         request={**request, "url": receiver + "/lost"}, context={},
                                         claimed_at=utcnow() - dt.timedelta(hours=1)))
    with live_server(settings, broker=MemoryBroker()) as api:
        wait_until("the pending call made", lambda: _Receiver.got, 20)
        failed = wait_until("the lost call given up", lambda: _named(api, "orchestrator.automation.action.failed"), 20)
        assert [path for path, _, _ in _Receiver.got] == ["/left"]
        assert failed[0].payload["action_index"] == 1 and "outcome unknown" in failed[0].payload["reason"]
        wait_until("the pending call recorded", lambda: _named(api, "orchestrator.automation.action.executed"), 20)
        with api.ctx.sessions() as session:
            assert sorted(session.scalars(select(m.AutomationCall.state))) == ["done", "failed"]


def test_a_server_without_webhook_calls_has_no_caller(api: LiveServer, target: dict[str, Any]) -> None:
    # Automations that call no webhook fire without the caller (its thread, its pool, urllib).
    _automation(api, {"expect": ["file.landed"]}, [{"type": "emit-event", "event": "file.seen",
                                                     "resource": {"orchestrator.resource.id": "x"}}])
    api.client().emit_events([_event("file.landed")])
    wait_until("fired", lambda: _named(api, "file.seen"), 20)
    service = api.app.state.triggers
    assert service.caller is None
    assert "automation-calls" not in {t.name for t in threading.enumerate()}
