"""One suite for every ``RunBroker``: ``MemoryBroker``, and ``CeleryBroker`` on kombu's in-process
``memory://`` transport and on Redis, must behave the same. Queue names are unique per test because
the memory transport's queues are shared by every connection in the process."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pools.broker import BrokerUnavailable, CeleryBroker, MemoryBroker, RunBroker, broker_for_url
from pools.names import QUEUE_PREFIX, RUN_FLOW_TASK, run_queue

EMPTY_TIMEOUT = 0.3
# Generous slack for a loaded CI machine; the point is that drain returns, not that it is fast.
SLACK = 10.0


@pytest.fixture(params=["memory-twin", "celery-memory", "celery-redis", "celery-embedded"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunBroker]:
    # Redis and the embedded broker publish directly (pools/publish.py) and drain through Celery.
    instance: RunBroker
    if request.param == "memory-twin":
        instance = MemoryBroker()
    elif request.param == "celery-memory":
        instance = CeleryBroker("memory://")
    elif request.param == "celery-redis":
        instance = CeleryBroker(request.getfixturevalue("redis_url"))
    else:
        instance = CeleryBroker(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    try:
        yield instance
    finally:
        instance.close()


def queue_name(label: str = "q") -> str:
    return run_queue(f"pool-{uuid.uuid4().hex}", label)


def test_drain_returns_published_ids_in_order_per_queue(broker: RunBroker) -> None:
    queue_a, queue_b = queue_name("a"), queue_name("b")
    ids_a = [uuid.uuid4() for _ in range(3)]
    id_b = uuid.uuid4()
    broker.publish(queue_a, ids_a[0])
    broker.publish(queue_b, id_b)
    broker.publish(queue_a, ids_a[1])
    broker.publish(queue_a, ids_a[2])

    assert broker.drain(queue_a, timeout=5) == ids_a
    assert broker.drain(queue_b, timeout=5) == [id_b]


def test_drained_ids_are_uuids(broker: RunBroker) -> None:
    queue = queue_name()
    run_id = uuid.uuid4()
    broker.publish(queue, run_id)

    drained = broker.drain(queue, timeout=5)

    assert drained == [run_id]
    assert all(isinstance(item, uuid.UUID) for item in drained)


def test_depth_counts_the_messages_waiting(broker: RunBroker) -> None:
    """What the dispatcher reads before publishing a run again (None: this broker cannot tell)."""
    queue = queue_name()
    for _ in range(3):
        broker.publish(queue, uuid.uuid4())
    depth = broker.depth(queue)
    if depth is None:
        assert isinstance(broker, CeleryBroker) and broker.url == "memory://"  # through Celery: unknown
        return
    assert depth == 3
    broker.drain(queue, timeout=5)
    assert broker.depth(queue) == 0


def test_drain_takes_the_messages_off_the_queue(broker: RunBroker) -> None:
    queue = queue_name()
    run_id = uuid.uuid4()
    broker.publish(queue, run_id)

    assert broker.drain(queue, timeout=5) == [run_id]
    assert broker.drain(queue, timeout=EMPTY_TIMEOUT) == []


def test_duplicate_publish_is_delivered_twice(broker: RunBroker) -> None:
    queue = queue_name()
    run_id, other = uuid.uuid4(), uuid.uuid4()
    broker.publish(queue, run_id)
    broker.publish(queue, other)
    broker.publish(queue, run_id)

    assert broker.drain(queue, timeout=5) == [run_id, other, run_id]


def test_drain_of_an_empty_queue_returns_nothing_within_the_timeout(broker: RunBroker) -> None:
    queue = queue_name()

    started = time.monotonic()
    drained = broker.drain(queue, timeout=EMPTY_TIMEOUT)
    elapsed = time.monotonic() - started

    assert drained == []
    assert elapsed < EMPTY_TIMEOUT + SLACK


def test_drain_of_one_queue_leaves_other_queues_alone(broker: RunBroker) -> None:
    queue_a, queue_b = queue_name("a"), queue_name("b")
    id_b = uuid.uuid4()
    broker.publish(queue_b, id_b)

    assert broker.drain(queue_a, timeout=EMPTY_TIMEOUT) == []
    assert broker.drain(queue_b, timeout=5) == [id_b]


def test_publish_after_drain_is_delivered(broker: RunBroker) -> None:
    queue = queue_name()
    first, second = uuid.uuid4(), uuid.uuid4()
    broker.publish(queue, first)
    assert broker.drain(queue, timeout=5) == [first]

    broker.publish(queue, second)

    assert broker.drain(queue, timeout=5) == [second]


def test_two_celery_brokers_on_memory_share_queues() -> None:
    # The control plane publishes with one app, the worker side drains with another.
    publisher, consumer = CeleryBroker("memory://"), CeleryBroker("memory://")
    try:
        queue = queue_name()
        run_id = uuid.uuid4()
        publisher.publish(queue, run_id)

        assert consumer.drain(queue, timeout=5) == [run_id]
    finally:
        publisher.close()
        consumer.close()


def _stored_redis(redis_url: str, queue: str) -> list[dict[str, Any]]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(item) for item in reversed(client.lrange(queue, 0, -1))]  # oldest first
    finally:
        client.close()


def _stored_sqlite(path: Path, queue: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT m.payload, m.visible, m.version FROM kombu_message m JOIN kombu_queue q "
                          "ON q.id = m.queue_id WHERE q.name = ? ORDER BY m.id", (queue,)).fetchall()
    assert {(visible, version) for _, visible, version in rows} == {(1, 1)}
    return [json.loads(payload) for payload, _, _ in rows]


@pytest.mark.parametrize("kind", ["redis", "embedded"])
def test_direct_publish_stores_the_message_celery_send_task_stores(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # pools/publish.py writes straight into the broker; workers read it with Celery, so it must stay
    # what Celery's own publish would store there.
    url = request.getfixturevalue("redis_url") if kind == "redis" else f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    broker = CeleryBroker(url)
    queue, run_ids = queue_name(), [uuid.uuid4() for _ in range(3)]
    try:
        # On a new embedded broker file the first goes through Celery, which makes kombu's tables.
        for run_id in run_ids:
            broker.publish(queue, run_id)
        broker.app.send_task(RUN_FLOW_TASK, args=[str(run_ids[-1])], queue=queue, retry=False)
    finally:
        broker.close()
    stored = _stored_redis(url, queue) if kind == "redis" else _stored_sqlite(tmp_path / "broker.db", queue)

    assert [json.loads(base64.b64decode(m["body"]))[0] for m in stored] == [[str(i)] for i in [*run_ids, run_ids[-1]]]
    for message in stored:  # per-message ids, and the sender's name and reply queue
        for header in ("id", "root_id", "origin"):
            message["headers"].pop(header)
        for prop in ("correlation_id", "delivery_tag", "reply_to"):
            message["properties"].pop(prop, None)
    direct, celerys = stored[-2], stored[-1]
    assert direct == celerys


def test_redis_publish_to_an_unreachable_redis_is_broker_unavailable() -> None:
    broker = CeleryBroker(f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        with pytest.raises(BrokerUnavailable, match="cannot publish to orch/pool/p/q"):
            broker.publish(run_queue("p", "q"), uuid.uuid4())
    finally:
        broker.close()


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_memory_broker_marked_unavailable_refuses_to_publish() -> None:
    broker = MemoryBroker()
    queue = queue_name()
    broker.available = False

    with pytest.raises(BrokerUnavailable, match=queue):
        broker.publish(queue, uuid.uuid4())

    broker.available = True
    assert broker.drain(queue, timeout=EMPTY_TIMEOUT) == []


def test_broker_for_url_picks_the_implementation() -> None:
    twin = broker_for_url("twin://")
    celery = broker_for_url("memory://")
    try:
        assert isinstance(twin, MemoryBroker)
        assert isinstance(celery, CeleryBroker)
        assert celery.url == "memory://"
    finally:
        twin.close()
        celery.close()


# --- pools.names --------------------------------------------------------------------------------


def test_run_queue_naming() -> None:
    assert run_queue("default-pool", "default") == "orch/pool/default-pool/default"
    assert run_queue("gpu", "high priority") == "orch/pool/gpu/high priority"


def test_run_queue_starts_with_the_prefix() -> None:
    assert QUEUE_PREFIX == "orch/pool/"
    assert run_queue("p", "q").startswith(QUEUE_PREFIX)


def test_run_queue_distinguishes_pools_and_queues() -> None:
    names = {run_queue(pool, queue) for pool in ("p1", "p2") for queue in ("q1", "q2")}

    assert len(names) == 4


def test_run_queue_is_not_symmetric() -> None:
    assert run_queue("a", "b") != run_queue("b", "a")


def test_run_flow_task_name() -> None:
    assert RUN_FLOW_TASK == "orchestrator.run_flow"


def test_run_queue_is_injective_for_dotted_names() -> None:
    assert run_queue("team.a", "default") != run_queue("team", "a.default")


def test_identity_is_stable_and_shared_by_every_client_of_the_broker(broker: RunBroker) -> None:
    from pools import identity

    first = broker.identity()
    assert first and broker.identity() == first
    if isinstance(broker, CeleryBroker):  # another client of the same broker reads the same id
        assert identity.read(broker.url) == first


def test_identity_of_an_unavailable_broker_raises() -> None:
    twin = MemoryBroker()
    twin.available = False
    with pytest.raises(BrokerUnavailable):
        twin.identity()
    with pytest.raises(BrokerUnavailable):
        CeleryBroker(f"redis://127.0.0.1:{_closed_port()}/0").identity()
