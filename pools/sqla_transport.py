"""kombu's SQLAlchemy transport, tuned for the embedded (no-server) broker.

kombu passes every transport option to ``create_engine`` (so ``polling_interval`` cannot be set
through options) and polls once a second by default; a run would wait up to a second on the
broker. This subclass polls every 50 ms, and its engine is made like the database's (WAL and a
busy timeout on SQLite), since the server and the workers share one broker file. It also returns
to Celery's loop often enough for a worker to stop promptly, and takes a queue another process
made between its look and its insert instead of dying on it.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport
from sqlalchemy.exc import IntegrityError


class Channel(_Channel):
    def _engine_from_config(self) -> Any:
        from orchestrator.sql import make_engine

        return make_engine(self.connection.client.hostname)

    def _get_or_create(self, queue: str) -> Any:
        # kombu looks for the queue's row, then inserts it under a lock of this process only: the
        # server publishing and a worker starting on a new pool race for the same row, and the
        # loser's UNIQUE violation killed the worker. The winner's row is the queue.
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class Transport(_Transport):
    Channel = Channel
    polling_interval = 0.05

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        # Celery's synchronous consumer loop (this transport has no event loop) waits here up to
        # 2 s between its checks for a shutdown request: a stopped worker lingered that long. Wait
        # in 0.2 s steps instead, and give up early once Celery is shutting down.
        from celery.worker import state

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                return super().drain_events(connection, timeout=step)
            except socket.timeout:
                stopping = state.should_stop is not None or state.should_terminate is not None
                if stopping or (deadline is not None and time.monotonic() >= deadline):
                    raise
