"""Publishing the run task without Celery's per-message cost: the shortcut around Celery's API.

Isolated here; the rest uses Celery and kombu as designed (workers consume these messages with
Celery; other transports, and the embedded broker until kombu has made its tables, publish with
``send_task``; the embedded broker's transport is a subclass of kombu's,
pools/sqla_transport.py). Here the control plane writes the message Celery's ``send_task``
would store, in the same place, with one statement: one LPUSH on Redis, one INSERT on the
embedded broker.
``tests/unit/test_broker_conformance.py`` checks, field by field, that it stays the message
``send_task`` stores.

Why, measured (three runs of ``python bench/publish_paths.py`` on 2026-12-03, 2 cores
shared with other test runs; the publishers alternated in every round; bench/RESULTS.md,
"Publishing through Celery's API"): ``app.send_task(..., queue=q, retry=False)`` on the app's
pooled producer against this module --

* one publish, Redis: 591 against 128 µs wall, 463 against 99 µs CPU (the quietest run, medians
  of 3 x 2,000): Celery's routing, signals and message building, and kombu building a Redis
  client per message;
* one publish, embedded broker: 2,184 against 268 µs wall, 1,455 against 154 µs CPU: kombu's
  SQLAlchemy transport looks the queue up in an ORM session, adds and flushes per message;
* create-run API, sequential, our server with its worker connected, 500 POSTs a round, medians:
  PostgreSQL + Redis 235 against 263 runs/s in the quietest run (load 2.8-3.9; -10.6 %, each of
  the 3 rounds lower), 122 against 165 under load 6-7 (5 rounds, -26 %); embedded 181 against
  297 runs/s (-39 %) and 120 against 259 (-54 %).

Both are above the 10 % a shortcut must save to be kept (Redis only just, on a quiet machine).
Run the script again when Celery or kombu change.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from pools import resp
from pools.errors import BrokerUnavailable
from pools.names import RUN_FLOW_TASK

if TYPE_CHECKING:
    import redis
    from sqlalchemy import Engine


class DirectPublisher(Protocol):
    def publish(self, queue: str, run_id: uuid.UUID) -> None: ...

    def send(self, queue: str, run_id: uuid.UUID) -> None: ...

    def lost(self) -> list[tuple[uuid.UUID, str]]: ...

    def settle(self) -> None: ...

    def depth(self, queue: str) -> int | None: ...

    def close(self) -> None: ...


def direct_publisher(broker_url: str, via_celery: Callable[[str, uuid.UUID], None]) -> DirectPublisher | None:
    """The direct publisher for this broker, or None where only Celery knows how to publish."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisTaskPublisher(broker_url)
    if broker_url.startswith("sqla+sqlite:"):
        return SqliteTaskPublisher(broker_url.removeprefix("sqla+"), via_celery)
    return None


def task_message(queue: str, run_id: uuid.UUID, *, origin: str) -> str:
    """The JSON text kombu's virtual transports (Redis, SQLAlchemy) store for
    ``send_task(RUN_FLOW_TASK, args=[run_id], queue=queue)``: Celery's message protocol 2
    (https://docs.celeryq.dev/en/stable/internals/protocol.html) in kombu's envelope, default
    exchange, priority 0, base64 body. Filled into texts made once (per queue and origin): built
    with ``json.dumps`` per message it cost ~40 µs of a create's ~0.5 ms of the server's CPU
    (bench/RESULTS.md, issue 22). The values filled in are ids, base64 and the ``repr`` of a list of
    one id: none needs JSON escaping."""
    task_id, delivery_tag = _random_ids()
    run = str(run_id)
    body = base64.b64encode(_body().fill(run=run).encode()).decode()
    return _envelope(queue, origin).fill(body=body, task_id=task_id, argsrepr=repr([run]), delivery_tag=delivery_tag)


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122's variant bits


def _random_ids() -> tuple[str, str]:
    """Two random (version 4) UUIDs as text, as ``str(uuid.uuid4())`` writes them, from one
    ``os.urandom``: two ``uuid4`` texts were ~6 µs of a message's ~10 (bench/RESULTS.md, issue 22)."""
    digits = os.urandom(32).hex()
    first, second = (f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
                     for h in (digits[:32], digits[32:]))
    return first, second


class _Template:
    """A JSON text with fields to fill, split once into its literal parts and the fields between
    them: filled by one ``join`` (``str.format`` parses its template at every call, ~2 µs here)."""

    def __init__(self, text: str, fields: dict[str, str]) -> None:
        """``fields``: each field's name by the mark that stands for it in ``text``."""
        pieces = re.split("(" + "|".join(map(re.escape, fields)) + ")", text)
        self.parts = pieces[0::2]
        self.fields = [fields[mark] for mark in pieces[1::2]]

    def fill(self, **values: str) -> str:
        out = [self.parts[0]]
        for name, part in zip(self.fields, self.parts[1:], strict=True):
            out += (values[name], part)
        return "".join(out)


def _template(document: Any, names: tuple[str, ...]) -> _Template:
    """``json.dumps(document)`` with the field ``name`` in place of each ``_mark(name)`` it holds
    (in a string of its own: the field's value goes between its quotes)."""
    return _Template(json.dumps(document), {_mark(name): name for name in names})


@functools.cache
def _mark(name: str) -> str:
    return f"@{os.urandom(12).hex()}-{name}@"  # no queue name nor origin holds it


@functools.cache
def _body() -> _Template:
    return _template([[_mark("run")], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
                     ("run",))


@functools.lru_cache(maxsize=256)
def _envelope(queue: str, origin: str) -> _Template:
    task_id = _mark("task_id")
    return _template({
        "body": _mark("body"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": RUN_FLOW_TASK, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": _mark("argsrepr"), "kwargsrepr": "{}", "origin": origin,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0, "body_encoding": "base64", "delivery_tag": _mark("delivery_tag"),
        },
    }, ("body", "task_id", "argsrepr", "delivery_tag"))


def _origin() -> str:
    return f"{os.getpid()}@{_hostname()}"


@functools.cache
def _hostname() -> str:
    """Read once per process, as Celery memoizes its own (``celery.utils.nodenames.gethostname``):
    a system call at every publish otherwise."""
    return socket.gethostname()


class RedisTaskPublisher:
    """One LPUSH onto the queue's list (kombu's Redis transport keeps priority 0 under the queue's
    own name). A plain ``redis://`` URL is spoken to by ``pools/resp.py``, so a server that has
    published never loads redis-py (~7 MB it would keep, issue 22); other URLs use redis-py."""

    def __init__(self, url: str) -> None:
        self.url = url
        address = resp.plain_redis(url)
        self._plain = resp.Connections(address, connect_timeout=5, timeout=10) if address else None
        self._client: redis.Redis | None = None  # built at the first publish, as the Celery app is

    def publish(self, queue: str, run_id: uuid.UUID) -> None:
        message = task_message(queue, run_id, origin=_origin())
        if self._plain is not None:
            try:
                self._plain.call("LPUSH", queue, message)
            except BrokerUnavailable as error:
                raise BrokerUnavailable(f"cannot publish to {queue}: {error}") from error
            return
        import redis  # kombu's Redis transport needs it too

        try:
            self._redis().lpush(queue, message)
        except redis.RedisError as error:
            raise BrokerUnavailable(f"cannot publish to {queue}: {error}") from error

    def send(self, queue: str, run_id: uuid.UUID) -> None:
        """``publish`` without waiting for Redis's reply (``resp.Connections.send``): a message Redis
        refuses, or whose reply is lost with its connection, shows in ``lost`` once the reply is
        read. Through redis-py, ``publish``."""
        if self._plain is None:
            self.publish(queue, run_id)
            return
        try:
            self._plain.send("LPUSH", queue, task_message(queue, run_id, origin=_origin()), token=(queue, run_id))
        except BrokerUnavailable as error:
            raise BrokerUnavailable(f"cannot publish to {queue}: {error}") from error

    def lost(self) -> list[tuple[uuid.UUID, str]]:
        """The runs whose sent messages Redis refused or may not have taken, with the reason, each once."""
        if self._plain is None:
            return []
        out = []
        for token, reason in self._plain.lost():
            queue, run_id = cast("tuple[str, uuid.UUID]", token)
            out.append((run_id, f"cannot publish to {queue}: {reason}"))
        return out

    def settle(self) -> None:
        """Read Redis's replies to the messages sent so far (their failures to ``lost``)."""
        if self._plain is not None:
            self._plain.settle()

    def depth(self, queue: str) -> int | None:
        """The length of the queue's list (a message a worker took has left Redis: no ack emulation,
        ``pools.broker.celery_app``)."""
        if self._plain is not None:
            try:
                return int(self._plain.call("LLEN", queue) or 0)
            except BrokerUnavailable as error:
                raise BrokerUnavailable(f"cannot read {queue}: {error}") from error
        import redis

        try:
            return int(self._redis().llen(queue))
        except redis.RedisError as error:
            raise BrokerUnavailable(f"cannot read {queue}: {error}") from error

    def _redis(self) -> redis.Redis:
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=10)
        return self._client

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
        if self._client is not None:
            self._client.close()


class SqliteTaskPublisher:
    """One INSERT into kombu's message table of the embedded broker's SQLite file, the row kombu
    writes (``visible``, no timestamp, version 1). The queue's row is made as kombu makes it when
    missing. Until kombu has created its tables (the first worker or publish through Celery does),
    messages go through Celery, which creates them."""

    def __init__(self, url: str, via_celery: Callable[[str, uuid.UUID], None]) -> None:
        self.url = url
        self._via_celery = via_celery
        self._engine: Engine | None = None
        self._queue_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def publish(self, queue: str, run_id: uuid.UUID) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        queue_id = self._queue_ids.get(queue) or self._queue_id(queue)
        if queue_id is None:
            self._via_celery(queue, run_id)
            return
        try:
            with self._connect().begin() as connection:
                connection.execute(
                    text("INSERT INTO kombu_message (visible, payload, version, queue_id) "
                         "VALUES (1, :payload, 1, :queue_id)"),
                    {"payload": task_message(queue, run_id, origin=_origin()), "queue_id": queue_id},
                )
        except SQLAlchemyError as error:
            self._queue_ids.pop(queue, None)  # looked up again next time
            raise BrokerUnavailable(f"cannot publish to {queue}: {error}") from error

    def send(self, queue: str, run_id: uuid.UUID) -> None:
        self.publish(queue, run_id)  # its INSERT answers at once

    def lost(self) -> list[tuple[uuid.UUID, str]]:
        return []

    def settle(self) -> None:
        pass

    def depth(self, queue: str) -> int | None:
        """Visible messages of the queue (kombu hides a message a worker took)."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        queue_id = self._queue_ids.get(queue) or self._queue_id(queue)
        if queue_id is None:
            return None
        try:
            with self._connect().connect() as connection:
                return int(connection.execute(text("SELECT count(*) FROM kombu_message WHERE queue_id = :queue_id "
                                                   "AND visible = 1"), {"queue_id": queue_id}).scalar() or 0)
        except SQLAlchemyError as error:
            raise BrokerUnavailable(f"cannot read {queue}: {error}") from error

    def _queue_id(self, queue: str) -> int | None:
        """The queue's id, its row added if missing; None while kombu's tables do not exist."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._connect().begin() as connection:
                connection.execute(text("INSERT OR IGNORE INTO kombu_queue (name) VALUES (:name)"), {"name": queue})
                found = connection.execute(text("SELECT id FROM kombu_queue WHERE name = :name"),
                                           {"name": queue}).scalar()
        except SQLAlchemyError:
            return None
        self._queue_ids[queue] = int(found)
        return self._queue_ids[queue]

    def _connect(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from orchestrator.sql import make_engine  # WAL and a busy timeout, as kombu's

                    self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
