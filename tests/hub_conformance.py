"""One suite for every event hub (``orchestrator/hub``): the in-process ``LocalHub`` runs it in
tests/unit/test_hub_local.py, ``PostgresHub`` on a real PostgreSQL in
tests/integration/test_hub_postgres.py. Each module provides a ``replica`` fixture: a function
returning a started hub of one more "replica" of the same deployment. Waits are bounded waits on
a queue, never sleeps; "nothing more arrived" is proven with a sentinel event sent after the
events that must not be repeated (a hub delivers each publisher's events in order)."""

from __future__ import annotations

import queue
from collections.abc import Callable

from orchestrator.server.hub import RESYNC, Hub

Replica = Callable[[], Hub]
TIMEOUT = 5.0


class Inbox:
    def __init__(self, hub: Hub, topic: str, key: str | None = None) -> None:
        self.items: queue.Queue[tuple[str, str]] = queue.Queue()
        self.subscription = hub.subscribe(topic, lambda got: self.items.put((topic, got)), key=key)

    def take(self, count: int) -> list[str]:
        return [self.items.get(timeout=TIMEOUT)[1] for _ in range(count)]

    def nothing_before(self, sentinel: str) -> list[str]:
        """Everything received up to ``sentinel``, which must come; returns what came before it."""
        before = []
        while (got := self.items.get(timeout=TIMEOUT)[1]) != sentinel:
            before.append(got)
        return before


def test_a_subscriber_gets_its_topic_only(replica: Replica) -> None:
    hub = replica()
    runs, schedules = Inbox(hub, "runs"), Inbox(hub, "schedules")
    hub.publish(("runs", "r1"), ("schedules", ""), ("runs", "r2"))
    assert runs.take(2) == ["r1", "r2"]
    assert schedules.take(1) == [""]
    hub.publish(("schedules", "end"))
    assert runs.items.empty() and schedules.nothing_before("end") == []


def test_a_key_filter_selects_events(replica: Replica) -> None:
    a, b = replica(), replica()
    mine, every = Inbox(b, "runs", key="r2"), Inbox(b, "runs")
    a.publish(("runs", "r1"), ("runs", "r2"), ("runs", "r3"), ("runs", "end"))
    assert every.take(4) == ["r1", "r2", "r3", "end"]
    assert mine.take(1) == ["r2"] and mine.items.empty()


def test_an_event_reaches_every_replica_once(replica: Replica) -> None:
    a, b = replica(), replica()
    on_a, on_b = Inbox(a, "runs"), Inbox(b, "runs")
    keys = [f"r{i}" for i in range(20)]
    for key in keys:
        a.publish(("runs", key))
    assert on_b.take(20) == keys  # in publish order
    assert on_a.take(20) == keys
    b.publish(("runs", "sentinel"))  # after a's events in every replica's stream
    assert on_a.nothing_before("sentinel") == []  # a did not get its own events a second time
    assert on_b.nothing_before("sentinel") == []


def test_one_publish_may_carry_many_events(replica: Replica) -> None:
    a, b = replica(), replica()
    on_b = Inbox(b, "runs")
    keys = [f"{i:04d}-" + "x" * 60 for i in range(500)]  # more than one PostgreSQL NOTIFY holds
    a.publish(*[("runs", key) for key in keys])
    assert on_b.take(500) == keys


def test_unsubscribed_callbacks_are_not_called(replica: Replica) -> None:
    a, b = replica(), replica()
    gone, stays = Inbox(b, "runs"), Inbox(b, "runs")
    gone.subscription.close()
    a.publish(("runs", "r1"))
    assert stays.take(1) == ["r1"]
    assert gone.items.empty()


def test_a_failing_subscriber_does_not_starve_the_others(replica: Replica) -> None:
    a, b = replica(), replica()

    def broken(_key: str) -> None:
        raise RuntimeError("subscriber bug")

    b.subscribe("runs", broken)
    a.subscribe("runs", broken)
    on_a, on_b = Inbox(a, "runs"), Inbox(b, "runs")
    a.publish(("runs", "r1"))
    assert on_a.take(1) == ["r1"] and on_b.take(1) == ["r1"]


def test_after_close_publish_still_reaches_this_replica(replica: Replica) -> None:
    a = replica()
    here = Inbox(a, "runs")
    a.close()
    a.close()  # idempotent
    a.publish(("runs", "r1"))  # never raises
    assert here.take(1) == ["r1"]


def test_resync_reaches_keyed_subscribers_too(replica: Replica) -> None:
    """``RESYNC`` means "anything may have changed": a subscriber to one key gets it as well."""
    hub = replica()
    keyed = Inbox(hub, "runs", key="r1")
    hub.publish(("runs", RESYNC))
    assert keyed.take(1) == [RESYNC]


__all__ = [name for name in dir() if name.startswith("test_")] + ["Inbox", "Replica"]