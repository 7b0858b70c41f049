"""An SQLAlchemy engine for a database URL, as the server and the embedded broker (which keeps its
queues in the same kind of database) both open it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

POOL_SIZE = 30  # connections one engine keeps at most (the API's thread pool has 40 threads)
# How long a request waits for one of them before it answers 503 (api/errors.py): well under a
# client's default timeout (30 s), so that the 503 reaches the client, which retries it.
POOL_TIMEOUT_SECONDS = 10


def make_engine(url: str) -> Engine:
    # No pre-ping: it costs a round trip on every checkout (~10 % of the create-run API's
    # throughput). A connection broken by a database restart fails its first statement instead;
    # SQLAlchemy then invalidates the whole pool, that one request answers 503 (api/errors.py) and
    # clients retry it (the CLI says "retry later").
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # A bounded connect: an unreachable host fails in seconds, not at the system's TCP timeout.
        # Up to 30 connections, each kept once opened (no overflow): with 10 kept and 20 overflow, a
        # server answering 20 clients closed and reopened a PostgreSQL session every ~8 creates (a
        # backend started, psycopg's connect and its adapters) -- bench/RESULTS.md, issue 22. The
        # pool still opens connections only as requests need them, and never more than before.
        # LIFO: the connection given back last is taken next, so a light load keeps to a few warm
        # backends instead of cycling through every one opened (-18 % of PostgreSQL's CPU per
        # sequential create, bench/RESULTS.md, issue 22).
        kwargs.update(pool_size=POOL_SIZE, max_overflow=0, pool_timeout=POOL_TIMEOUT_SECONDS, pool_use_lifo=True,
                      connect_args={"connect_timeout": 10})
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine



def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
