"""Which broker is this? A random id stored in the broker itself.

The server stores one in its broker when it starts (``ensure``: the first server of a shared broker
writes it, the others read it); a worker reads the id of the broker it is about to consume
(``read``, which never writes) and compares it with the one the API reports. Equal ids mean the
same broker whatever its URLs look like (``redis://redis:6379/0`` inside a Compose network,
``redis://10.0.0.5:6379/0`` elsewhere); different or missing ids mean runs published by the server
would never reach the worker. Where it is kept (``pools/names.py``): the Redis key
``BROKER_ID_KEY``, or one row of the table ``BROKER_ID_TABLE`` in the embedded broker's SQLite file.

``memory://`` (one process's Celery) has one id per process; other URLs are refused by the settings.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from pools import resp
from pools.errors import BrokerUnavailable
from pools.names import BROKER_ID_KEY, BROKER_ID_TABLE

_PROCESS_ID = str(uuid.uuid4())  # memory://: the broker lives in this process


def ensure(url: str, *, timeout: float = 5.0) -> str:
    """The broker's id, stored first if it has none. Raises ``BrokerUnavailable`` (after at most
    about ``timeout`` seconds) when the broker cannot be reached."""
    found = _access(url, timeout, create=str(uuid.uuid4()))
    if found is None:  # written just before: only a broker emptied in between gets here
        raise BrokerUnavailable("the broker lost its id as it was stored")
    return found


def read(url: str, *, timeout: float = 5.0) -> str | None:
    """The broker's id, or None when it has none (it is not a broker any server uses). Writes
    nothing, and creates no embedded broker file. Raises ``BrokerUnavailable``."""
    return _access(url, timeout, create=None)


def _access(url: str, timeout: float, create: str | None) -> str | None:
    if url.startswith(("redis://", "rediss://")):
        return _redis(url, timeout, create)
    if url.startswith("sqla+sqlite:"):
        return _sqlite(url.removeprefix("sqla+"), create)
    if url.startswith("memory://"):
        return _PROCESS_ID
    raise BrokerUnavailable(f"unsupported broker URL {url!r}")


def _redis(url: str, timeout: float, create: str | None) -> str | None:
    plain = resp.plain_redis(url)
    if plain is not None:
        return _redis_exchange(plain, timeout=timeout, create=create)
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        if create is not None:
            client.set(BROKER_ID_KEY, create, nx=True)  # a concurrent first server may win: read back
        value = client.get(BROKER_ID_KEY)
    except redis.RedisError as error:
        raise BrokerUnavailable(str(error)) from error
    finally:
        client.close()
    return value.decode() if isinstance(value, bytes) else value


# The server's start asks its broker for this id before it serves: over a plain connection the
# commands are sent by ``pools/resp.py``, so the start does not load the Redis client (62 modules,
# ~45 ms of CPU and ~7 MB). Any URL with options (TLS, query parameters) goes through redis-py.

def _redis_exchange(address: resp.Address, *, timeout: float, create: str | None) -> str | None:
    """AUTH and SELECT as redis-py sends them, SET NX when ``create``, then GET: one round trip."""
    commands = address.greeting()
    if create is not None:
        commands.append(["SET", BROKER_ID_KEY, create, "NX"])
    commands.append(["GET", BROKER_ID_KEY])
    payload = b"".join(resp.command(args) for args in commands)
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as connection:
            connection.sendall(payload)
            replies = connection.makefile("rb")
            answers = [resp.reply(replies) for _ in commands]
    except OSError as error:
        raise BrokerUnavailable(resp.connect_error(address, error)) from None
    for args, answer in zip(commands, answers, strict=True):
        if resp.failed(args, answer):
            raise BrokerUnavailable(str(answer))
    value = answers[-1]
    return value.decode() if isinstance(value, bytes) else None


def _sqlite(url: str, create: str | None) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.sql import make_engine

    path = url.removeprefix("sqlite:///")
    if create is None and not Path(path).is_file():
        return None  # reading must not create a broker file where there was none
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if create is not None:
                connection.execute(text(f"CREATE TABLE IF NOT EXISTS {BROKER_ID_TABLE} "
                                        "(k INTEGER PRIMARY KEY CHECK (k = 1), id TEXT NOT NULL)"))
                connection.execute(text(f"INSERT OR IGNORE INTO {BROKER_ID_TABLE} (k, id) VALUES (1, :id)"),
                                   {"id": create})
            elif not connection.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"),
                                        {"t": BROKER_ID_TABLE}).scalar():
                return None
            return connection.execute(text(f"SELECT id FROM {BROKER_ID_TABLE} WHERE k = 1")).scalar()
    except SQLAlchemyError as error:
        raise BrokerUnavailable(str(getattr(error, "orig", None) or error)) from error
    finally:
        engine.dispose()
