"""An SQLAlchemy engine for a database URL, as the server and the embedded broker (which keeps its
queues in the same kind of database) both open it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event


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
        kwargs.update(pool_size=10, max_overflow=20, connect_args={"connect_timeout": 10})
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
