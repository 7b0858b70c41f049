"""The server's PostgreSQL engine keeps the connections it opened (``orchestrator/sql.py``)."""

from __future__ import annotations

import contextlib

from sqlalchemy import text

from orchestrator.sql import POOL_SIZE, make_engine


def backend_pids(engine: object, count: int) -> set[int]:
    """The PostgreSQL backends serving ``count`` connections checked out at once, then given back."""
    with contextlib.ExitStack() as held:
        connections = [held.enter_context(engine.connect()) for _ in range(count)]  # type: ignore[attr-defined]
        return {connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in connections}


def test_connections_opened_for_a_burst_are_kept_for_the_next(postgres_url: str) -> None:
    """20 requests at once, then 20 more: the second burst is served by the first burst's
    sessions. With 10 kept and the rest overflow, half of them were closed and reopened (a new
    backend each: ~1 in 8 creates with 20 clients, issue 22)."""
    engine = make_engine(postgres_url)
    try:
        first = backend_pids(engine, 20)
        again = backend_pids(engine, 20)
        assert len(first) == 20
        assert again == first
        assert engine.pool.checkedin() == 20
    finally:
        engine.dispose()


def test_the_pool_opens_no_more_connections_than_before(postgres_url: str) -> None:
    """At most 30 (10 + 20 overflow before), so ``max_connections`` sizing in docs/operations.md holds."""
    engine = make_engine(postgres_url)
    try:
        assert POOL_SIZE == 30
        assert len(backend_pids(engine, POOL_SIZE)) == POOL_SIZE
        assert engine.pool.size() == POOL_SIZE
    finally:
        engine.dispose()


def test_the_connection_given_back_last_is_taken_next(postgres_url: str) -> None:
    """One request after another keeps to one warm backend, not every backend a burst opened."""
    engine = make_engine(postgres_url)
    try:
        with contextlib.ExitStack() as held:
            burst = [held.enter_context(engine.connect()) for _ in range(3)]
            pids = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in burst]
        # ExitStack gave them back last-opened first: the first one opened was given back last.
        taken = []
        for _ in range(5):
            with engine.connect() as connection:
                taken.append(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert taken == [pids[0]] * 5
    finally:
        engine.dispose()


def test_a_spent_pool_answers_before_a_client_gives_up(postgres_url: str) -> None:
    """A request waiting for a connection of a spent pool fails (503, api/errors.py) well within a
    client's default timeout, so the client gets that answer and retries it; waiting as long as the
    client (SQLAlchemy's default, 30 s) made the client give up first, as if the server were gone."""
    from orchestrator.settings import Settings

    engine = make_engine(postgres_url)
    try:
        assert engine.pool.timeout() <= Settings().client_timeout_seconds / 2  # type: ignore[attr-defined]
    finally:
        engine.dispose()
