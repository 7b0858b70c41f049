"""A run's message on Redis is taken by one BRPOP and kept nowhere else (pools.broker.celery_app: no
ack emulation): the database is the run's keeper, and a message a worker took and never claimed is
published again by the dispatcher, as a lost one."""

from __future__ import annotations

import uuid
from typing import Any

from pools.broker import CeleryBroker
from pools.names import run_queue


def values(client: Any, key: bytes) -> list[bytes]:
    """Every value stored under ``key``, whatever its type."""
    kind = client.type(key)
    if kind == b"hash":
        return list(client.hvals(key))
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind in (b"set", b"zset"):
        return list(client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))
    return [client.get(key) or b""] if kind == b"string" else []


def test_a_message_a_consumer_holds_is_no_longer_in_redis(redis_url: str) -> None:
    import redis
    from kombu import Consumer, Queue

    broker = CeleryBroker(redis_url)
    queue = run_queue("p", f"delivery-{uuid.uuid4()}")
    run_id = uuid.uuid4()
    client = redis.Redis.from_url(redis_url)
    try:
        broker.publish(queue, run_id)
        held: list[tuple[object, object]] = []
        # Taken as Celery's task consumer takes it, to be acknowledged later (never, here: a worker that dies)
        queues = [Queue(queue, routing_key=queue)]
        with (
            broker.app.connection_for_read() as connection,
            Consumer(
                connection,
                queues=queues,
                accept=["json"],
                prefetch_count=1,
                callbacks=[lambda body, message: held.append((body, message))],
            ),
        ):
            connection.drain_events(timeout=5)
            assert [uuid.UUID(body[0][0]) for body, _ in held] == [run_id]  # type: ignore[index]
            assert broker.depth(queue) == 0  # so the dispatcher publishes the run again when due
            assert [
                key for key in client.scan_iter() if str(run_id).encode() in b"".join(values(client, key))
            ] == []
    finally:
        client.close()
        broker.close()
