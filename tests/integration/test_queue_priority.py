"""A worker consuming several queues of a pool takes from the highest-priority non-empty queue
first (kombu's priority queue order on Redis, set by pools.broker.celery_app)."""

from __future__ import annotations

import uuid

from pools.broker import CeleryBroker
from pools.names import run_queue


def test_redis_consumer_takes_the_first_listed_queue_first(redis_url: str) -> None:
    from kombu import Consumer, Queue

    broker = CeleryBroker(redis_url)
    high, low = run_queue("p", f"high-{uuid.uuid4()}"), run_queue("p", f"low-{uuid.uuid4()}")
    low_runs = [uuid.uuid4() for _ in range(3)]
    high_runs = [uuid.uuid4() for _ in range(2)]
    try:
        for run_id in low_runs:
            broker.publish(low, run_id)
        for run_id in high_runs:
            broker.publish(high, run_id)
        taken: list[uuid.UUID] = []

        def on_message(body: object, message: object) -> None:
            args = body[0] if isinstance(body, (list, tuple)) else []
            taken.append(uuid.UUID(args[0]))
            message.ack()  # type: ignore[attr-defined]

        with broker.app.connection_for_read() as connection:
            queues = [Queue(high, routing_key=high), Queue(low, routing_key=low)]
            with Consumer(connection, queues=queues, callbacks=[on_message], prefetch_count=1, accept=["json"]):
                for _ in range(5):
                    connection.drain_events(timeout=5)
        assert taken == high_runs + low_runs
    finally:
        broker.close()
