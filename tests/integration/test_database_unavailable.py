"""A database the API cannot use right now answers 503 ``service_unavailable`` with ``Retry-After``,
and a retrying client (workers, flow-run processes) waits it out and succeeds once it has passed, on
a live API over a real PostgreSQL: this server's connection pool spent (every connection busy for
the pool's timeout; it answered a bare 500 before, which no client retries) and PostgreSQL refusing
a new connection (SQLSTATE 53300, "too many connections", as when ``max_connections`` is reached).

The app's sessions are bound to an engine of the test's own, of one connection and a 0.2 s
timeout, so that spending it takes one held connection, not 30 of the shared server's."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import InterfaceError
from sqlalchemy.pool import NullPool

from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.conftest import LiveServer, live_server

pytestmark = pytest.mark.integration

POOL_TIMEOUT = 0.2  # seconds a request waits for a connection of the test's pool
POOL_EXHAUSTED = ("database connection pool exhausted (QueuePool limit of size 1 overflow 0 reached, connection "
                  f"timed out, timeout {POOL_TIMEOUT:.2f}), retry later")


class Refusals(logging.Handler):
    """Counts the API's log lines for the 503s it answers whose reason contains ``phrase``."""

    def __init__(self, phrase: str) -> None:
        super().__init__(logging.WARNING)
        self.phrase = phrase
        self.count = 0
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if self.phrase in record.getMessage():
            with self.changed:
                self.count += 1
                self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, timeout), \
                f"{self.count} of {count} requests answered 503 ({self.phrase!r}) within {timeout} s"


@contextlib.contextmanager
def refusals(phrase: str) -> Iterator[Refusals]:
    handler = Refusals(phrase)
    logger = logging.getLogger("orchestrator.api")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def get(server: LiveServer, path: str) -> tuple[int, Message, Any]:
    """Status, headers (names in any case) and JSON body of one GET."""
    url = urllib.parse.urlsplit(server.url + path)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("GET", url.path)
        response = connection.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        connection.close()


def held_pool(database_url: str) -> tuple[Engine, Callable[[], Connection]]:
    """The API's engine: one connection, a short wait; it is spent while the test holds that one."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=POOL_TIMEOUT)
    return engine, engine.connect


@contextlib.contextmanager
def role_at_its_limit(pg_admin: Any, database_url: str) -> Iterator[tuple[Engine, Callable[[], Connection]]]:
    """The API's engine connects as a role allowed one connection (PostgreSQL refuses the next:
    SQLSTATE 53300, the limit a superuser would not meet); the test holds that one."""
    role = f"orch_t_limited_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as c:
        c.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1'))
    url = make_url(database_url).set(username=role)
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=POOL_TIMEOUT)
    other = create_engine(url, poolclass=NullPool)
    try:
        yield engine, other.connect
    finally:
        engine.dispose()
        other.dispose()
        with pg_admin.connect() as c:
            c.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.mark.parametrize(("kind", "phrase", "detail"), [
    ("pool", "pool exhausted", POOL_EXHAUSTED),
    ("role", "database unavailable", "database unavailable, retry later"),
], ids=["pool_spent", "too_many_connections"])
def test_the_api_answers_503_and_a_retrying_client_succeeds_once_it_has_passed(
        kind: str, phrase: str, detail: str, pg_admin: Any, postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_url="http://unused/api")
    with contextlib.ExitStack() as stack:
        engine, take = held_pool(postgres_url) if kind == "pool" else stack.enter_context(
            role_at_its_limit(pg_admin, postgres_url))
        stack.callback(engine.dispose)
        server = stack.enter_context(live_server(settings, broker=MemoryBroker(), run_services=False))
        server.ctx.sessions.configure(bind=engine)
        answered = stack.enter_context(refusals(phrase))
        held = take()
        try:
            status, headers, body = get(server, "/health")
            assert (status, body) == (503, {"detail": detail, "code": "service_unavailable"})
            assert headers["Retry-After"] == "1"
            with pytest.raises(ServiceUnavailable, match="retry later"):  # a client that does not retry
                server.client().health()
            assert answered.count == 2

            retrying = server.client(retry_seconds=30)
            calls = stack.enter_context(ThreadPoolExecutor(1))
            health = calls.submit(retrying.health)
            answered.wait_for(3)  # its first try met the same 503
            assert not health.done()
        finally:
            held.close()
        assert health.result(timeout=30) is True  # retried once the connection was free
        assert get(server, "/health")[0] == 200


def test_a_connection_found_lost_answers_503_with_retry_after(tmp_path: Path, sqlite_url: str) -> None:
    """A statement that found its connection closed (psycopg's InterfaceError, which SQLAlchemy
    marks as invalidating the pool's connections) is a database unavailable, not a bug."""
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:

        async def lost() -> None:
            raise InterfaceError("SELECT 1", {}, Exception("the connection is closed"), connection_invalidated=True)

        server.app.add_api_route("/api/test-lost-connection", lost, methods=["GET"])
        status, headers, body = get(server, "/test-lost-connection")
        assert (status, body) == (503, {"detail": "database unavailable, retry later", "code": "service_unavailable"})
        assert headers["Retry-After"] == "1"
