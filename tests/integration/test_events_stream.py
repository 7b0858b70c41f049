"""The live stream (GET /api/events/stream, Server-Sent Events): delivery, resume from a cursor
without gap or duplicate (also when a later seq commits first on PostgreSQL), two replicas, the
heartbeat, and a subscriber that leaves."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.schemas.events import EventIn, resource
from orchestrator.server.api.routes import events as event_routes
from orchestrator.server.hub import EVENTS
from orchestrator.server.services import events
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.conftest import LiveServer, live_server
from tests.harness import wait_until


class Subscriber:
    """A raw SSE reader on a thread: what a browser's EventSource sees."""

    def __init__(self, api: LiveServer, query: str = "", last_event_id: str | None = None) -> None:
        url = urllib.parse.urlsplit(api.url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.connection.request("GET", f"{url.path}/events/stream?{query}", headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.comments: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        wait_until("the stream to open", lambda: any(c.startswith("open") for c in self.comments), 10)

    def _read(self) -> None:
        cursor, data = "", []
        # Ends when close() shuts the socket (http.client then raises one of several errors).
        with contextlib.suppress(Exception):
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line.startswith("id: "):
                    cursor = line[4:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif not line and data:
                    self.events.append((cursor, json.loads("\n".join(data))))
                    data = []

    def payloads(self) -> list[Any]:
        return [event["payload"]["n"] for _, event in self.events]

    def wait_for(self, count: int) -> list[Any]:
        wait_until(f"{count} events on the stream", lambda: len(self.events) >= count, 15, 0.01)
        return self.payloads()

    def close(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.connection.sock.shutdown(2)
        self.thread.join(5)
        self.connection.close()


@contextlib.contextmanager
def subscribed(api: LiveServer, query: str = "", last_event_id: str | None = None) -> Iterator[Subscriber]:
    subscriber = Subscriber(api, query, last_event_id)
    try:
        yield subscriber
    finally:
        subscriber.close()


def emit(api: LiveServer, *numbers: int, name: str = "x.y") -> None:
    body = [{"event": name, "resource": resource("r.1"), "payload": {"n": n}} for n in numbers]
    assert api.raw("POST", "/events", body)[0] == 202


def test_delivery_and_resume_without_gap_or_duplicate(api: LiveServer) -> None:
    before = api.ctx.hub.subscriber_count(EVENTS)  # the server's own listeners (the trigger evaluator)
    with subscribed(api, "event=x.*") as live:
        emit(api, 1, 2)
        emit(api, 0, name="other")  # filtered out
        emit(api, 3)
        assert live.wait_for(3) == [1, 2, 3]
        last = live.events[-1][0]
    wait_until("the stream to unsubscribe", lambda: api.ctx.hub.subscriber_count(EVENTS) == before, 10)
    emit(api, 4)
    emit(api, 5, name="other")
    emit(api, 6)
    with subscribed(api, "event=x.*", last_event_id=last) as resumed, \
            subscribed(api, f"event=x.*&after={urllib.parse.quote(last)}") as by_query:
        assert resumed.wait_for(2) == [4, 6] and by_query.wait_for(2) == [4, 6]
        emit(api, 7)
        assert resumed.wait_for(3) == [4, 6, 7] and by_query.wait_for(3) == [4, 6, 7]
        middle = resumed.events[0][0]
    with subscribed(api, "event=x.*", last_event_id=middle) as again:
        assert again.wait_for(2) == [6, 7]


def test_an_earlier_seq_committed_later_is_not_lost(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=postgres_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as api:
        emit(api, 0)
        with subscribed(api) as live:
            first = api.ctx.sessions()
            first.begin()
            events.record(first, [EventIn(event="x.y", resource=resource("r.1"), payload={"n": 1})])  # seq n
            emit(api, 2)  # seq n + 1, committed first
            assert live.wait_for(1) == [2]
            cursor_after_2 = live.events[0][0]
            assert ":" in cursor_after_2  # n is still open below it
            first.commit()  # its after-commit hook wakes the stream
            first.close()
            assert live.wait_for(2) == [2, 1]
        with subscribed(api, last_event_id=cursor_after_2) as resumed:
            emit(api, 3)
            assert resumed.wait_for(2) == [1, 3]


def test_a_subscriber_on_one_replica_sees_writes_through_another(postgres_url: str, tmp_path: Path) -> None:
    def settings(name: str) -> Settings:  # no re-reads: only the hub can carry it in time
        return Settings(home=tmp_path / name, database_url=postgres_url, api_url="http://unused/api",
                        hub_reread_seconds=300)

    with live_server(settings("a"), broker=MemoryBroker(), run_services=False) as a, \
            live_server(settings("b"), broker=MemoryBroker(), run_services=False) as b, subscribed(b) as live:
        emit(a, 1)
        emit(b, 2)
        assert live.wait_for(2) == [1, 2]


def test_heartbeat_comments(api: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_routes, "HEARTBEAT_SECONDS", 0.2)
    with subscribed(api) as live:
        wait_until("two heartbeats", lambda: live.comments.count("keep-alive") >= 2, 10)


def test_the_client_streams_with_filters(api: LiveServer) -> None:
    client = api.client()
    got: list[tuple[str, Any]] = []
    ready = threading.Event()

    def consume() -> None:
        for cursor, event in client.stream_events(event=["x.*"], labels=["env=prod"]):
            got.append((cursor, event))
            if len(got) == 2:
                return

    before = api.ctx.hub.subscriber_count(EVENTS)  # the server's own listeners (the trigger evaluator)
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_until("the client's stream to subscribe", lambda: api.ctx.hub.subscriber_count(EVENTS) > before, 10)
    ready.set()
    body = [{"event": "x.y", "resource": resource("r.1", env=env), "payload": {"n": n}}
            for n, env in ((1, "dev"), (2, "prod"), (3, "prod"))]
    client.emit_events(body)
    thread.join(15)
    assert [event.payload["n"] for _, event in got] == [2, 3]
    assert all(cursor for cursor, _ in got) and isinstance(got[0][1].id, uuid.UUID)
