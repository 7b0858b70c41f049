"""``emit_event`` and its emitter against a live API (SQLite and PostgreSQL): bad input raises where
it is made; a call never waits on the network, not even while a send hangs; events queued while
the API is unreachable arrive once it is back; a batch sent again after its answer was lost is
stored once; a script's events are all sent before it exits. Faults are real: a TCP proxy in front
of the API refuses connections, or drops the API's answer after the API has stored the batch."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.client import Client
from orchestrator.emitting import EventEmitter
from orchestrator.errors import InvalidInput
from orchestrator.schemas.events import related, resource
from orchestrator.sdk.events import emit_event
from orchestrator.server.db import models as m
from tests.conftest import LiveServer
from tests.harness import clean_env, wait_until


class FaultProxy:
    """A TCP proxy to the API. ``up=False``: new connections are closed at once (the API is down).
    ``lose_answers=n``: the next ``n`` answers are read from the API and not passed on, the
    connection closed instead (the request was done; its sender cannot know)."""

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("//", 1)[1].split("/", 1)[0]
        self.upstream = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/api"
        self.up = True
        self.lose_answers = 0
        self.lost = 0
        self.refused = 0
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                self.refused += 1
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self.lose_answers > 0:
                    self.lose_answers -= 1
                    self.lost += 1
                    break
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


class BlackHole:
    """Accepts connections, reads requests, never answers: a send to it hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/api"
        self.request_seen = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                self._held.append(connection)
                if connection.recv(65536).startswith(b"POST /api/events"):
                    self.request_seen.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def proxy(api: LiveServer) -> Iterator[FaultProxy]:
    p = FaultProxy(api.url)
    yield p
    p.close()


@pytest.fixture
def emitters() -> Iterator[list[EventEmitter]]:
    made: list[EventEmitter] = []
    yield made
    for emitter in made:
        emitter.close(5)


def _emitter(emitters: list[EventEmitter], url: str, **options: Any) -> EventEmitter:
    clients: list[Client] = []

    def client() -> Client:
        clients.append(Client(url, timeout=10))
        return clients[-1]

    emitter = EventEmitter(client, **options)
    emitters.append(emitter)
    return emitter


def _event(index: int) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "occurred": "2026-01-01T00:00:00+00:00", "event": "test.thing.happened",
            "resource": resource(f"test.thing.{index}"), "related": [], "payload": {"index": index}, "follows": None}


def stored_ids(api: LiveServer) -> list[str]:
    with api.ctx.sessions() as session:
        return [str(i) for i in session.scalars(select(m.Event.id).order_by(m.Event.seq))]


def _script(code: str, api_url: str, tmp_path: Path) -> subprocess.Popen[str]:
    env = {**clean_env(), "ORCH_API_URL": api_url, "ORCH_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "named"), [
    ({"resource": {"name": "x"}}, "resource: "),
    ({"related": [{"orchestrator.resource.id": "a"}]}, "related.0: "),
    ({"payload": {"blob": "x" * 1_000_001}}, "payload is"),
    ({"payload": {"thing": object()}}, "payload: "),
    ({"event": ""}, "event: "),
    ({"id": "not-a-uuid"}, "id: "),
])
def test_a_bad_event_raises_at_the_call_site_naming_the_field(arguments: dict[str, Any], named: str) -> None:
    call = {"event": "test.thing", "resource": resource("test.thing.1"), **arguments}
    with pytest.raises(InvalidInput) as error:
        emit_event(**call)
    assert named in str(error.value)


# --- never blocks ----------------------------------------------------------------------------------------


def test_emit_event_returns_while_the_send_in_progress_hangs(tmp_path: Path) -> None:
    """The script's first event starts a send that the black hole never answers; the next 100 calls
    return all the same (a call that waited on the network would wait out the 30 s timeout)."""
    hole = BlackHole()
    gate = tmp_path / "go"
    script = _script(
        "import os, pathlib, time\n"
        "from orchestrator import emit_event\n"
        "emit_event('test.first', {'orchestrator.resource.id': 'test.1'})\n"
        f"gate = pathlib.Path({str(gate)!r})\n"
        "while not gate.exists(): time.sleep(0.01)\n"
        "for i in range(100): emit_event('test.more', {'orchestrator.resource.id': f'test.{i}'})\n"
        "print('returned', flush=True)\n"
        "os._exit(0)\n", hole.url, tmp_path)
    try:
        assert hole.request_seen.wait(30), script.stderr.read() if script.poll() is not None else "no request"
        gate.touch()  # the sender is now inside a request that will never be answered
        out, err = script.communicate(timeout=20)
        assert "returned" in out, err
    finally:
        script.kill()
        script.wait()
        hole.close()


# --- outages, retries, exit --------------------------------------------------------------------------------


def test_events_emitted_while_the_api_is_unreachable_arrive_when_it_is_back(
        api: LiveServer, proxy: FaultProxy, emitters: list[EventEmitter]) -> None:
    emitter = _emitter(emitters, proxy.url)
    proxy.up = False
    events = [_event(i) for i in range(250)]
    for event in events:
        emitter.put(event)
    wait_until("the emitter to meet the outage", lambda: proxy.refused >= 2)
    assert emitter.pending == 250 and stored_ids(api) == []
    proxy.up = True
    assert emitter.flush(30)
    assert stored_ids(api) == [e["id"] for e in events]  # all of them, in the order emitted
    assert emitter.sent == 250


def test_a_batch_sent_again_after_its_answer_was_lost_is_stored_once(
        api: LiveServer, proxy: FaultProxy, emitters: list[EventEmitter]) -> None:
    emitter = _emitter(emitters, proxy.url, linger_seconds=1.0)
    proxy.lose_answers = 3  # the first try and the transport's immediate retry, then a retry after back-off
    events = [_event(i) for i in range(100)]  # one full batch: sent at once
    for event in events:
        emitter.put(event)
    assert emitter.flush(30)
    assert proxy.lost == 3  # the API answered three times; each answer was lost on the way
    assert stored_ids(api) == [e["id"] for e in events]


def test_the_oldest_events_are_dropped_beyond_the_buffer(
        api: LiveServer, proxy: FaultProxy, emitters: list[EventEmitter]) -> None:
    emitter = _emitter(emitters, proxy.url, max_buffered=50, linger_seconds=5.0)  # nothing taken before all are put
    proxy.up = False
    events = [_event(i) for i in range(80)]
    for event in events:
        emitter.put(event)
    assert emitter.pending == 50 and emitter.dropped == 30
    proxy.up = True
    assert emitter.flush(30)
    assert stored_ids(api) == [e["id"] for e in events[30:]]


def test_a_script_that_emits_1000_events_and_exits_has_sent_them_all(api: LiveServer, tmp_path: Path) -> None:
    script = _script(
        "from orchestrator import emit_event\n"
        "for i in range(1000):\n"
        "    emit_event('test.counted', {'orchestrator.resource.id': f'test.{i}'}, payload={'i': i})\n",
        api.url, tmp_path)
    _out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    with api.ctx.sessions() as session:  # no wait: the script's exit waited until they were stored
        payloads = session.scalars(select(m.Event.payload).order_by(m.Event.seq)).all()
    assert [p["i"] for p in payloads] == list(range(1000))


def test_a_related_resource_the_caller_names_is_kept_beside_the_direct_call_run(
        api: LiveServer, tmp_path: Path) -> None:
    """A flow called directly with an API set is a run (``sdk/direct_runs.py``): its events are
    related to that run and its flow, as a deployment's run's are, after the caller's own."""
    script = _script(
        "from orchestrator import emit_event, flow\n"
        "from orchestrator.schemas.events import related\n"
        "@flow\n"
        "def direct():\n"
        "    emit_event('test.in-a-direct-call', {'orchestrator.resource.id': 'test.1'},\n"
        "               related=[related('owner', 'test.owner.1', 'me')])\n"
        "direct()\n", api.url, tmp_path)
    _out, err = script.communicate(timeout=60)
    assert script.returncode == 0, err
    (run,) = api.client().list_flow_runs().items
    with api.ctx.sessions() as session:
        (row,) = session.scalars(select(m.Event).where(m.Event.event == "test.in-a-direct-call")).all()
    assert row.related[0] == related("owner", "test.owner.1", "me")
    assert f"orchestrator.flow-run.{run.id}" in [r["orchestrator.resource.id"] for r in row.related]
