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
import urllib.parse
import uuid
from pathlib import Path

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
    plain = _plain_redis(url)
    if plain is not None:
        return _redis_exchange(*plain, timeout=timeout, create=create)
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


# The server's start asks its broker for this id before it serves, and a server publishes nothing
# until a run is due: over a plain connection the three commands are sent here, so the start does
# not load the Redis client (62 modules, ~45 ms of CPU and ~8 MB that an idle server kept; it is
# loaded at the first publish). Any URL with options (TLS, query parameters) goes through redis-py.

def _plain_redis(url: str) -> tuple[str, int, str | None, str | None, int] | None:
    """(host, port, username, password, db) of a ``redis://`` URL without options, else None."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 6379
        db = int(parts.path.lstrip("/") or 0)
    except ValueError:
        return None  # redis-py gives its own error
    if parts.scheme != "redis" or parts.query or parts.fragment or not parts.hostname:
        return None
    unquote = urllib.parse.unquote
    return (parts.hostname, port, unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None, db)


def _redis_exchange(host: str, port: int, username: str | None, password: str | None, db: int, *,
                    timeout: float, create: str | None) -> str | None:
    """AUTH and SELECT as redis-py sends them, SET NX when ``create``, then GET: one round trip
    (RESP2, https://redis.io/docs/latest/develop/reference/protocol-spec/). Errors read as redis-py's."""
    commands: list[list[str]] = []
    if password is not None:
        commands.append(["AUTH", username, password] if username else ["AUTH", password])
    if db:
        commands.append(["SELECT", str(db)])
    if create is not None:
        commands.append(["SET", BROKER_ID_KEY, create, "NX"])
    commands.append(["GET", BROKER_ID_KEY])
    payload = b"".join(_command(args) for args in commands)
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(payload)
            replies = connection.makefile("rb")
            answers = [_reply(replies) for _ in commands]
    except socket.timeout:
        raise BrokerUnavailable("Timeout connecting to server") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise BrokerUnavailable(f"Error {error.errno} connecting to {host}:{port}. {reason}.") from None
    for args, answer in zip(commands, answers, strict=True):
        # A password given to a Redis that has none: redis-py goes on, and so does this.
        if isinstance(answer, _Error) and not (args[0] == "AUTH" and answer.startswith(_NO_PASSWORD)):
            raise BrokerUnavailable(str(answer))
    value = answers[-1]
    return value.decode() if isinstance(value, bytes) else None


_NO_PASSWORD = "AUTH <password> called without any password configured"


class _Error(str):
    """An error reply, its text as redis-py reports it (without the error's code word)."""


def _command(args: list[str]) -> bytes:
    encoded = [arg.encode() for arg in args]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded)


def _reply(replies: object) -> bytes | _Error | None:
    line = replies.readline()  # type: ignore[attr-defined]
    if not line.endswith(b"\r\n"):
        raise OSError(0, "Connection closed by server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        code, _, text = rest.decode(errors="replace").partition(" ")
        return _Error(text if code.isupper() and text else rest.decode(errors="replace"))
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else replies.read(size + 2)[:-2]  # type: ignore[attr-defined]
    return rest  # +OK, :1


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
