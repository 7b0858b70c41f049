"""kombu's SQLAlchemy transport, tuned for the embedded (no-server) broker.

kombu passes every transport option to ``create_engine`` (so ``polling_interval`` cannot be set
through options) and polls once a second by default; a run would wait up to a second on the
broker. This subclass polls every 50 ms, and its engine is made like the database's (WAL and a
busy timeout on SQLite), since the server and the workers share one broker file.
"""

from __future__ import annotations

from typing import Any

from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport


class Channel(_Channel):
    def _engine_from_config(self) -> Any:
        from orchestrator.db.session import make_engine

        return make_engine(self.connection.client.hostname)


class Transport(_Transport):
    Channel = Channel
    polling_interval = 0.05
