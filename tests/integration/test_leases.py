"""Connection leases (services/leases.py) on a live server, SQLite and PostgreSQL: a worker or
flow-run process whose open request is dropped (a real socket closed mid-request, as the kernel
does for a killed process) is judged gone a short grace later, not three heartbeats later; one
that asks again at once is not. Reaper passes get their time explicitly, so no test waits."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.services import leases, run_columns
from tests.conftest import LiveServer
from tests.harness import wait_until

HEARTBEAT = 10.0  # the default: silence = 30 s, grace = 2 s


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A live API whose background services do not run: the test drives the reaper itself."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api",
                        worker_heartbeat_seconds=HEARTBEAT)
    with live_server(settings, broker=MemoryBroker(), run_services=False) as live:
        yield live


def ctx(server: LiveServer) -> Any:
    return server.app.state.ctx


def running_run(server: LiveServer, worker: str = "w1") -> uuid.UUID:
    """A RUNNING run held by ``worker`` of pool p, its worker and process having just beaten."""
    assert server.raw("POST", "/work_pools", {"name": "p", "type": "process"})[0] == 201
    status, deployment = server.raw("POST", "/deployments", {"flow_name": "f", "name": "d", "entrypoint": "f.py:f",
                                                            "work_pool_name": "p"})
    assert status == 201, deployment
    status, run = server.raw("POST", f"/deployments/{deployment['id']}/runs", {})
    assert status == 201, run
    assert server.raw("POST", "/work_pools/p/workers/heartbeat", {"name": worker})[0] == 204
    assert server.raw("POST", f"/flow_runs/{run['id']}/claim", {"worker_name": worker, "pool": "p"})[0] == 200
    status, body = server.raw("POST", f"/flow_runs/{run['id']}/state", {"type": "RUNNING", "worker_name": worker})
    assert status == 201, body
    assert server.raw("POST", f"/flow_runs/{run['id']}/heartbeat")[0] == 200
    return uuid.UUID(run["id"])


def open_and_drop(server: LiveServer, method: str, path: str) -> None:
    """Send one request and close the connection without waiting for the answer: what a killed
    process's kernel does to the requests it had open."""
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{method} /api{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())


def worker_heartbeat(server: LiveServer, name: str = "w1") -> dt.datetime:
    with ctx(server).sessions() as session:
        return session.scalar(select(m.Worker.last_heartbeat).where(m.Worker.name == name))  # type: ignore[return-value]


def run_heartbeat(server: LiveServer, run_id: uuid.UUID) -> dt.datetime:
    with ctx(server).sessions() as session:
        return session.scalar(select(m.FlowRun.heartbeat_at).where(m.FlowRun.id == run_id))  # type: ignore[return-value]


def lapsed(at: dt.datetime) -> bool:
    """Whether a heartbeat time was backdated by a dropped connection (a real beat is recent)."""
    return at < utcnow() - dt.timedelta(seconds=HEARTBEAT)


def state(server: LiveServer, run_id: uuid.UUID) -> dict[str, Any]:
    return server.raw("GET", f"/flow_runs/{run_id}")[1]["state"]  # type: ignore[no-any-return]


GRACE = dt.timedelta(seconds=leases.grace_seconds(dt.timedelta(seconds=3 * HEARTBEAT)))
NUDGE = dt.timedelta(milliseconds=200)


def test_worker_and_process_that_drop_their_connections_are_judged_after_the_grace(server: LiveServer) -> None:
    run_id = running_run(server)
    open_and_drop(server, "GET", "/work_pools/p/workers/w1/cancellations?timeout=30")
    open_and_drop(server, "POST", f"/flow_runs/{run_id}/heartbeat?hold=30")
    wait_until("both heartbeats backdated",
               lambda: lapsed(worker_heartbeat(server)) and lapsed(run_heartbeat(server, run_id)))
    dropped = utcnow()
    reaper = ctx(server).reaper
    assert reaper.tick(dropped) == []  # within the grace: it may reconnect
    changed = reaper.tick(dropped + GRACE + NUDGE)
    assert [r.id for r in changed] == [run_id]
    final = state(server, run_id)
    assert final["type"] == "CRASHED"
    assert "stopped reporting" in final["message"]


def test_a_process_that_drops_its_lease_while_its_worker_lives_is_left_alone(server: LiveServer) -> None:
    run_id = running_run(server)
    open_and_drop(server, "POST", f"/flow_runs/{run_id}/heartbeat?hold=30")
    wait_until("process heartbeat backdated", lambda: lapsed(run_heartbeat(server, run_id)))
    assert not lapsed(worker_heartbeat(server))
    assert ctx(server).reaper.tick(utcnow() + GRACE + NUDGE) == []  # the worker settles its own runs
    assert state(server, run_id)["type"] == "RUNNING"


def test_a_worker_that_asks_again_at_once_keeps_its_lease(server: LiveServer) -> None:
    run_id = running_run(server)
    open_and_drop(server, "POST", f"/flow_runs/{run_id}/heartbeat?hold=30")
    open_and_drop(server, "GET", "/work_pools/p/workers/w1/cancellations?timeout=30")
    wait_until("worker heartbeat backdated", lambda: lapsed(worker_heartbeat(server)))
    dropped = utcnow()
    # The worker's next long-poll (what a live worker sends right after any answer) renews it.
    assert server.raw("GET", "/work_pools/p/workers/w1/cancellations?timeout=0")[0] == 200
    assert not lapsed(worker_heartbeat(server))
    assert ctx(server).reaper.tick(dropped + GRACE + NUDGE) == []
    assert state(server, run_id)["type"] == "RUNNING"


def test_a_held_heartbeat_renews_and_answers_with_the_current_state(server: LiveServer) -> None:
    run_id = running_run(server)
    before = run_heartbeat(server, run_id)
    assert server.raw("POST", f"/flow_runs/{run_id}/cancel")[0] == 200
    status, run = server.raw("POST", f"/flow_runs/{run_id}/heartbeat?hold=0.2")
    assert status == 200
    assert run["state"]["type"] == "CANCELLING"  # read after the hold: the process learns it
    assert run_heartbeat(server, run_id) > before


def test_a_lease_never_moves_a_newer_heartbeat_back_further_than_asked(server: LiveServer) -> None:
    run_id = running_run(server)
    at = utcnow() - dt.timedelta(hours=1)
    with ctx(server).transaction() as session:
        run_columns.lapse_heartbeat(session, run_id, at)
    assert abs((run_heartbeat(server, run_id) - at).total_seconds()) < 0.01
    with ctx(server).transaction() as session:
        run_columns.lapse_heartbeat(session, run_id, utcnow())  # later than the current one: no change
    assert abs((run_heartbeat(server, run_id) - at).total_seconds()) < 0.01


def another_running_run(server: LiveServer, worker: str) -> uuid.UUID:
    """One more RUNNING run of the deployment ``running_run`` made, held by ``worker``."""
    deployment = server.raw("GET", "/deployments/name/f/d")[1]
    run = server.raw("POST", f"/deployments/{deployment['id']}/runs", {})[1]
    assert server.raw("POST", "/work_pools/p/workers/heartbeat", {"name": worker})[0] == 204
    assert server.raw("POST", f"/flow_runs/{run['id']}/claim", {"worker_name": worker, "pool": "p"})[0] == 200
    assert server.raw("POST", f"/flow_runs/{run['id']}/state", {"type": "RUNNING", "worker_name": worker})[0] == 201
    return uuid.UUID(run["id"])


def test_before_silence_is_trusted_only_holders_seen_dropping_are_judged(server: LiveServer) -> None:
    """Just after a start the reaper does not trust silence (holders could not beat while the server
    was down), but it judges the holders it saw drop their connections after the grace."""
    dropped_run = running_run(server)
    silent_run = another_running_run(server, "w2")
    with ctx(server).transaction() as session:  # silent since before the start: not seen dropping
        long_ago = utcnow() - dt.timedelta(hours=1)
        leases.lapse_worker(session, long_ago, pool_name="p", worker_name="w2")
        run_columns.lapse_heartbeat(session, silent_run, long_ago)
    open_and_drop(server, "GET", "/work_pools/p/workers/w1/cancellations?timeout=30")
    open_and_drop(server, "POST", f"/flow_runs/{dropped_run}/heartbeat?hold=30")
    reaper = ctx(server).reaper
    wait_until("both holders seen dropping", lambda: leases.WorkerHolder("p", "w1") in reaper.dropped
               and leases.RunHolder(dropped_run) in reaper.dropped)
    after_grace = utcnow() + GRACE + NUDGE
    assert [r.id for r in reaper.tick(after_grace, dropped=reaper.dropped)] == [dropped_run]
    assert state(server, silent_run)["type"] == "RUNNING"
    assert [r.id for r in reaper.tick(after_grace)] == [silent_run]  # once silence is trusted


def test_before_silence_is_trusted_a_process_seen_dropping_whose_worker_lives_is_left_alone(
        server: LiveServer) -> None:
    run_id = running_run(server)
    open_and_drop(server, "POST", f"/flow_runs/{run_id}/heartbeat?hold=30")
    reaper = ctx(server).reaper
    wait_until("process seen dropping", lambda: leases.RunHolder(run_id) in reaper.dropped)
    with ctx(server).transaction() as session:  # the worker is silent too, but was not seen leaving
        leases.lapse_worker(session, utcnow() - dt.timedelta(hours=1), pool_name="p", worker_name="w1")
    assert reaper.tick(utcnow() + GRACE + NUDGE, dropped=reaper.dropped) == []
    assert state(server, run_id)["type"] == "RUNNING"


def test_a_process_leaving_after_its_runs_final_state_wakes_no_reaper(server: LiveServer) -> None:
    """Every run's normal end: its flow-run process reports the final state, then exits, which
    drops its held heartbeat. Nothing is backdated, so the reaper is not asked for a pass (one
    per run was ~1 ms of the server's CPU a run); a live run's drop still is (the tests above)."""
    run_id = running_run(server)
    status, body = server.raw("POST", f"/flow_runs/{run_id}/state", {"type": "COMPLETED", "worker_name": "w1"})
    assert status == 201, body
    app_ctx = ctx(server)
    handled: list[leases.Holder] = []
    client_gone = app_ctx.client_gone

    def watched(holder: leases.Holder) -> None:  # the route's own, called through: seen once it returned
        client_gone(holder)
        handled.append(holder)

    app_ctx.client_gone = watched
    open_and_drop(server, "POST", f"/flow_runs/{run_id}/heartbeat?hold=30")
    wait_until("the dropped beat handled", lambda: handled)
    assert handled == [leases.RunHolder(run_id)]
    assert not app_ctx.reaper.dropped
    assert app_ctx.reaper._due is None  # no pass asked for
