"""kombu's SQLAlchemy transport, tuned for the embedded (no-server) broker.

kombu passes every transport option to ``create_engine`` (so ``polling_interval`` cannot be set
through options) and polls once a second by default; a run would wait up to a second on the
broker. This subclass polls every 50 ms and gives SQLite a busy timeout, since the server and the
workers share one broker file.
"""

from __future__ import annotations

from typing import Any

from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport
from sqlalchemy import create_engine, event


class Channel(_Channel):
    def _engine_from_config(self) -> Any:
        url = self.connection.client.hostname
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _wal)
        return engine


def _wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Transport(_Transport):
    Channel = Channel
    polling_interval = 0.05
