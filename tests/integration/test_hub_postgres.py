"""The hub conformance suite (tests/hub_conformance.py) over ``PostgresHub`` on a real
PostgreSQL, each replica a hub of its own connections on one database; plus what only a real
database can show: a listener whose connection is killed reconnects and says ``RESYNC``, a
publish with the database unreachable does not raise, and events published within the notify
interval share one notification."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text

from orchestrator.server.hub import RESYNC, Hub
from orchestrator.server.hub.postgres import CHANNEL, PostgresHub, conninfo
from tests.conftest import free_port
from tests.harness import thread_wakeups, wait_until
from tests.hub_conformance import *  # noqa: F403 -- the shared suite
from tests.hub_conformance import Inbox, Replica


@pytest.fixture
def replica(postgres_url: str) -> Iterator[Replica]:
    hubs: list[Hub] = []

    def make() -> Hub:
        hub = PostgresHub(postgres_url)
        hub.start()
        assert hub.listening.is_set()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def test_a_killed_listening_connection_reconnects_and_resyncs(replica: Replica, postgres_url: str) -> None:
    a, b = replica(), replica()
    on_b = Inbox(b, "runs", key="r1")
    engine: Any = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            killed = c.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE :listen"), {"listen": f"LISTEN {CHANNEL}%"}).scalar()
        assert killed == 2  # both replicas' listeners
        assert on_b.take(1) == [RESYNC]  # what was sent meanwhile may be lost: re-read
        a.publish(("runs", "r1"))
        assert on_b.take(1) == ["r1"]  # and events flow again
    finally:
        engine.dispose()


def test_publish_with_the_database_unreachable_is_delivered_here_and_does_not_raise() -> None:
    hub = PostgresHub(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    here = Inbox(hub, "runs")
    hub.publish(("runs", "r1"))
    assert here.take(1) == ["r1"]
    hub.close()


def test_another_replicas_close_signal_is_not_taken_for_a_malformed_notification(
    replica: Replica, caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, c = replica(), replica(), replica()
    on_b = Inbox(b, "runs", key="r1")
    a.close()  # its listener's close signal reaches b's listener too
    c.publish(("runs", "r1"))  # sent after it: once b has this, it has read a's signal
    assert on_b.take(1) == ["r1"]
    assert "malformed" not in caplog.text


def test_events_published_within_the_notify_interval_share_one_notification(postgres_url: str) -> None:
    hub = PostgresHub(postgres_url, notify_interval=600)  # long: only close() ends it here
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")

        def notifications(count: int) -> list[str]:
            return [note.payload.partition(" ")[2] for note in listener.notifies(timeout=30, stop_after=count)]

        hub.publish(("runs", "r0"))
        assert notifications(1) == ['[["runs", "r0"]]']  # the first at once: no NOTIFY before it
        hub.publish(("runs", "r1"))
        # The sender has taken r1 (without the interval it would NOTIFY it alone now) ...
        wait_until("the hub's sender to take r1", hub._outbox.empty, 30)
        for k in range(2, 10):  # ... and these come within the interval of r0's NOTIFY too
            hub.publish(("runs", f"r{k}"))
        hub.close()  # ends the interval: what waits for it goes out, then the close signal
        assert notifications(2) == [json.dumps([["runs", f"r{k}"] for k in range(1, 10)]), "close"]


def test_a_replica_alone_notifies_nothing_and_one_that_starts_hears_it_at_once(replica: Replica) -> None:
    a = replica()
    on_a = Inbox(a, "runs")
    for key in ("r1", "r2", "r3"):
        a.publish(("runs", key))
    assert on_a.take(3) == ["r1", "r2", "r3"]  # its own subscribers, at once as ever
    wait_until("a's sender to find that nobody else listens", a.alone, 30)
    a.publish(("runs", "r4"))
    b = replica()  # its start returns once a answered its hello: a knows of it
    on_b = Inbox(b, "runs")
    a.publish(("runs", "r5"))
    assert on_b.take(1) == ["r5"]
    # counted once its statement returned, which may be just after b heard it
    wait_until("a's sender to count r5's NOTIFY", lambda: a.notified >= 1, 30)
    assert a.notified == 1  # r5's: r1-r4 went to nobody


def test_an_older_replica_listening_is_notified_and_the_newcomer_resyncs(postgres_url: str) -> None:
    """An older replica (its listener's one statement: LISTEN) answers no hello: the hub is sent
    to it, and, since such a replica might have skipped a NOTIFY, wakes its subscribers once."""
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as older:
        older.execute(f"LISTEN {CHANNEL}")
        hub = PostgresHub(postgres_url, peers_check=0.2, hello_timeout=0.2)
        here = Inbox(hub, "runs")
        hub.start()
        try:
            assert hub.listening.is_set()
            hello = next(older.notifies(timeout=30, stop_after=1)).payload.partition(" ")[2]
            assert json.loads(hello) == [["hub", ""]]  # an event of a topic the older replica has no subscriber of
            assert here.take(1) == [RESYNC]
            hub.publish(("runs", "r1"))
            notes = [note.payload.partition(" ")[2] for note in older.notifies(timeout=30, stop_after=1)]
            assert notes == ['[["runs", "r1"]]']
            wait_until("the sender to count r1's NOTIFY", lambda: hub.notified >= 1, 30)  # after its statement
            assert hub.notified == 1
            assert here.nothing_before("r1") == []
        finally:
            hub.close()


def test_an_idle_listener_sleeps_until_a_notification_comes(replica: Replica) -> None:
    """The listener waits on its connection's socket in one blocking call: psycopg's
    ``notifies(timeout=...)`` waits in 0.1 s steps, ten wake-ups a second of an idle server."""
    here = replica()
    listener = here._thread.native_id  # type: ignore[attr-defined]
    before = thread_wakeups(listener)
    time.sleep(1.0)  # the time over which an idle listener is measured, not a wait for an event
    assert thread_wakeups(listener) - before <= 2
    on_here = Inbox(here, "runs", key="r1")
    replica().publish(("runs", "r1"))  # and a notification still wakes it at once
    assert on_here.take(1) == ["r1"]
