"""Two API server replicas on one PostgreSQL database: a change made through replica A wakes
replica B's waiters and services through the event hub, not through a re-read. Both replicas
re-read only every 300 s (``hub_reread_seconds``); a long-poll reads once more when its 20 s are
up, so the waiter tests require the answer well before that. Each test fails if the hub does
not carry the change. Replica A runs no services in the
service tests, so only B's dispatcher or scheduler can have done the work."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.server.hub import CANCELLATIONS, RUNS, worker_key
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from pools.names import run_queue
from tests.conftest import LiveServer, live_server

NO_REREAD = 300.0
WAIT = 20  # seconds a long-poll waits before answering with what it has


def settings(home: Path, url: str) -> Settings:
    return Settings(home=home, database_url=url, api_url="http://unused/api", hub_reread_seconds=NO_REREAD,
                    scheduler_loop_seconds=NO_REREAD)


@contextlib.contextmanager
def replicas(tmp_path: Path, url: str, *, a_services: bool) -> Iterator[tuple[LiveServer, LiveServer]]:
    with live_server(settings(tmp_path / "a", url), broker=MemoryBroker(), run_services=a_services) as a, \
            live_server(settings(tmp_path / "b", url), broker=MemoryBroker()) as b:
        yield a, b


def ok(answer: tuple[int, Any]) -> Any:
    status, body = answer
    assert status < 300, body
    return body


def deployment(server: LiveServer, **extra: Any) -> str:
    ok(server.raw("POST", "/work_pools", {"name": "p", "type": "process"}))
    return str(ok(server.raw("POST", "/deployments", {"flow_name": "f", "name": "d", "entrypoint": "f.py:f",
                                                      "work_pool_name": "p", **extra}))["id"])


def create_run(server: LiveServer, deployment_id: str, later: bool) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=1 if later else 0)
    return str(ok(server.raw("POST", f"/deployments/{deployment_id}/runs", {"scheduled_time": when.isoformat()}))["id"])


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def in_thread(call: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``call``; the returned function joins it (bounded) and returns its result."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()

    def result() -> Any:
        thread.join(timeout=WAIT + 10)
        assert box, "the long-poll did not answer"
        return box[0]

    return result


def test_a_cancel_through_a_wakes_a_wait_on_b(postgres_url: str, tmp_path: Path) -> None:
    with replicas(tmp_path, postgres_url, a_services=True) as (a, b):
        run_id = create_run(a, deployment(a), later=True)
        answer = in_thread(lambda: b.raw("GET", f"/flow_runs/{run_id}/wait?timeout={WAIT}"))
        until(lambda: b.ctx.hub.subscriber_count(RUNS, run_id) == 1)  # B's waiter is waiting
        began = time.monotonic()
        ok(a.raw("POST", f"/flow_runs/{run_id}/cancel"))
        assert ok(answer())["state"]["type"] == "CANCELLED"
        assert time.monotonic() - began < WAIT / 2  # answered on the change, not at the long-poll's end


def test_a_cancel_through_a_reaches_the_workers_channel_on_b(postgres_url: str, tmp_path: Path) -> None:
    with replicas(tmp_path, postgres_url, a_services=True) as (a, b):
        run_id = create_run(a, deployment(a), later=False)
        ok(a.raw("POST", "/work_pools/p/workers/heartbeat", {"name": "w"}))
        ok(a.raw("POST", f"/flow_runs/{run_id}/claim", {"worker_name": "w", "pool": "p"}))
        ok(a.raw("POST", f"/flow_runs/{run_id}/state", {"type": "RUNNING", "worker_name": "w"}))
        answer = in_thread(lambda: b.raw("GET", f"/work_pools/p/workers/w/cancellations?timeout={WAIT}"))
        until(lambda: b.ctx.hub.subscriber_count(CANCELLATIONS, worker_key("p", "w")) == 1)
        began = time.monotonic()
        ok(a.raw("POST", f"/flow_runs/{run_id}/cancel"))
        assert ok(answer()) == [run_id]
        assert time.monotonic() - began < WAIT / 2


def test_a_pool_resumed_through_a_wakes_bs_dispatcher(postgres_url: str, tmp_path: Path) -> None:
    with replicas(tmp_path, postgres_url, a_services=False) as (a, b):
        deployment_id = deployment(a)
        ok(a.raw("PATCH", "/work_pools/p", {"paused": True}))
        run_id = create_run(a, deployment_id, later=False)  # a paused pool's run is not published
        queue = run_queue("p", "default")
        assert b.broker.drain(queue, timeout=0.5) == []
        ok(a.raw("PATCH", "/work_pools/p", {"paused": False}))
        assert b.broker.drain(queue, timeout=10) == [uuid.UUID(run_id)]  # B's dispatcher, woken by A's resume


def test_a_schedule_created_through_a_wakes_bs_scheduler(postgres_url: str, tmp_path: Path) -> None:
    with replicas(tmp_path, postgres_url, a_services=False) as (a, b):
        until(lambda: b.app.state.scheduler.passes >= 1)  # B's scheduler had its first pass; it sleeps 300 s
        deployment_id = deployment(a, schedules=[{"interval": 3600}])
        until(lambda: ok(a.raw("GET", f"/flow_runs?deployment_id={deployment_id}"))["total"] >= 3)
