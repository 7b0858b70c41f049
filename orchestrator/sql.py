"""An SQLAlchemy engine for a database URL, as the server and the embedded broker (which keeps its
queues in the same kind of database) both open it."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Sequence
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
    elif engine.dialect.driver == "psycopg":
        event.listen(engine, "do_execute", _execute_planned)
        event.listen(engine, "connect", _describe_lazily)
        # The dialect's own method, for this engine (its sessions' rollbacks and the pool's reset).
        engine.dialect.do_rollback = _rollback_keeping_prepared  # type: ignore[method-assign]
    return engine


# --- the run path's statements, planned once per connection ------------------------------------
#
# A statement psycopg has not prepared is planned by PostgreSQL at every execution; psycopg prepares
# it at its 6th execution on a connection, and PostgreSQL then plans it 5 more times ("custom plans")
# before it keeps a generic one. The run path's statements (the claim, a transition, its state row,
# a heartbeat) are read or written by primary key, so their generic plan is the plan, and their
# planning (~0.2-0.5 ms of the backend a statement, the claim's read ~0.5) was on every run's way:
# a connection seldom got there, as psycopg forgets its prepared statements at each rollback (below)
# (bench/RESULTS.md, issue 22). Statements marked ``PLAN: GENERIC`` are prepared at their first
# execution, and a transaction one of them opens begins with ``SET LOCAL plan_cache_mode =
# force_generic_plan``, sent with the ``BEGIN`` (one round trip, as psycopg's own ``BEGIN``): from
# their second execution on a connection they run without planning. The setting is the
# transaction's, so every other statement (the lists, whose plans depend on their parameters)
# keeps PostgreSQL's default; should one run in such a transaction, the setting is put back first.

PLAN = "orch_plan"  # the execution option (``statement.execution_options(**{PLAN: ...})``)
GENERIC = "generic"  # prepared, and a transaction it opens plans generically
PREPARED = "prepared"  # prepared at the first execution, planned as the transaction says
# The psycopg connections whose transaction was opened generic (until it is seen ended).
_GENERIC_TX: weakref.WeakSet[Any] = weakref.WeakSet()
_BEGIN_GENERIC = b"BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"


def _execute_planned(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    """SQLAlchemy's ``do_execute`` hook: executes a statement marked ``PLAN`` (returns True);
    any other is left to SQLAlchemy (None), after putting the default planning back if its
    transaction was opened generic."""
    from psycopg import pq

    plan = context.execution_options.get(PLAN)
    connection = cursor.connection
    if plan is None and connection not in _GENERIC_TX:
        return None
    idle = connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
    if idle:
        _GENERIC_TX.discard(connection)  # the transaction that was opened generic has ended
    if plan is None:
        if connection in _GENERIC_TX:
            _GENERIC_TX.discard(connection)
            _command(connection, b"SET LOCAL plan_cache_mode = DEFAULT")
        return None
    if plan == GENERIC and idle and not connection.autocommit and _plain_begin(connection):
        # libpq's own call, in place of psycopg's BEGIN: psycopg reads the transaction's status
        # from libpq before each statement, so it sends no BEGIN of its own, and commits as usual.
        _command(connection, _BEGIN_GENERIC)
        _GENERIC_TX.add(connection)
    cursor.execute(statement, parameters, prepare=True)
    return True


def _plain_begin(connection: Any) -> bool:
    """psycopg would begin with a plain ``BEGIN`` (no isolation level, read-only or deferrable mode
    of its own, which only its ``BEGIN`` says): else its transaction is left to it (prepared only)."""
    return connection.isolation_level is None and connection.read_only is None and connection.deferrable is None


def _rollback_keeping_prepared(connection: Any) -> None:
    """A rollback that keeps the connection's prepared statements. psycopg's own ``rollback()``
    forgets every statement it has prepared on the connection and sends ``DEALLOCATE ALL``; every
    read-only session ends with a rollback (the pool's reset, a request that read), so no statement
    stayed prepared for long: the run path's were planned again after each GET of a run, a worker's
    poll... (bench/RESULTS.md, issue 22). PostgreSQL's prepared statements are the session's, not
    the transaction's: a rollback leaves them as they were, so psycopg's record of them stays true."""
    from psycopg import pq

    if connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        _command(connection, b"ROLLBACK")


def _command(connection: Any, command: bytes) -> None:
    import psycopg
    from psycopg import pq

    result = connection.pgconn.exec_(command)
    if result.status != pq.ExecStatus.COMMAND_OK:  # a broken connection: fails as a statement would
        raise psycopg.OperationalError((result.error_message or connection.pgconn.error_message).decode(errors="replace"))



def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# --- a result's column descriptions, built when read ---------------------------------------------
#
# SQLAlchemy reads ``cursor.description`` after each execution, to know whether the statement
# returned rows; it reads the description's entries only for a compiled statement it has no result
# metadata of yet (its first execution), and keeps that metadata for the others. psycopg builds a
# ``Column`` per result column at each read of ``description`` (its name decoded, its type looked
# up): ~95 a claim, ~20 % of the claim's Python in its profile, ~40 a state report, for a check of
# None (bench/RESULTS.md, issue 22, branch h2). The cursor class below answers the same
# description, its ``Column`` objects built at the first read of one of them, from the result
# they describe (tests/integration/test_lazy_descriptions.py compares them with psycopg's own).
# A process uses the class only after its first connection saw it describe as psycopg does.


class _Result:
    """What psycopg's ``Column`` reads of its cursor, kept for one result: the cursor may have
    executed another statement by the time a description's columns are read."""

    __slots__ = ("_encoding", "adapters", "pgresult")

    def __init__(self, pgresult: Any, encoding: str, adapters: Any) -> None:
        self.pgresult, self._encoding, self.adapters = pgresult, encoding, adapters


class LazyDescription(Sequence[Any]):
    """A cursor's ``description``: as many entries as the result has columns, psycopg's ``Column``
    objects, built when one is first read."""

    __slots__ = ("_columns", "_count", "_cursor", "_result")

    def __init__(self, cursor: Any, result: Any, count: int) -> None:
        self._cursor, self._result, self._count = cursor, result, count
        self._columns: list[Any] | None = None

    def _built(self) -> list[Any]:
        if self._columns is None:
            from psycopg import Column

            source = _Result(self._result, self._cursor._encoding, self._cursor.adapters)
            self._columns = [Column(source, i) for i in range(self._count)]  # type: ignore[arg-type]
            self._cursor = self._result = None  # nothing more to build from
        return self._columns

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        return self._built()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._built())


def _describe_lazily(dbapi_connection: Any, _record: Any) -> None:
    """SQLAlchemy's ``connect`` hook: a new psycopg connection makes ``described_lazily()`` cursors,
    once that class has been seen to describe as psycopg does (``lazy_cursor_class``)."""
    cursor_class = lazy_cursor_class(dbapi_connection)
    if cursor_class is not None:
        dbapi_connection.cursor_factory = cursor_class


_CHECKED: list[type | None] = []  # the first connection's verdict, for the process


def lazy_cursor_class(dbapi_connection: Any) -> type | None:
    """``described_lazily()`` when its description of a result equals psycopg's own on this
    connection, else None (psycopg's own cursor is kept). Checked at a process's first connection:
    ``LazyDescription`` builds psycopg's ``Column`` from what that class reads of a cursor
    (``pgresult``, ``_encoding``, ``adapters``), which another psycopg release may read otherwise
    (pyproject sets no upper bound), and a wrong description would break every query's result."""
    if not _CHECKED:
        _CHECKED.append(_describes_as_psycopg(dbapi_connection))
    return _CHECKED[0]


def _describes_as_psycopg(dbapi_connection: Any) -> type | None:
    cursor_class = described_lazily()
    query = "SELECT 1::int4 AS a, 'x'::varchar(9) AS b, NULL::numeric(6, 2) AS c"
    try:
        with dbapi_connection.cursor() as theirs, cursor_class(dbapi_connection) as ours:
            theirs.execute(query)
            ours.execute(query)
            same = [tuple(column) for column in ours.description] == [tuple(column) for column in theirs.description]
    except Exception:  # noqa: BLE001 - any failure of the lazy class: psycopg's own cursor, as before
        same = False
    finally:
        dbapi_connection.rollback()  # the check's transaction: the pool gets the connection as opened
    return cursor_class if same else None


@functools.cache
def described_lazily() -> type:
    """psycopg's ``Cursor`` with a ``LazyDescription`` (one class, made at the first connection)."""
    import psycopg
    from psycopg import pq

    rows = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.SINGLE_TUPLE, getattr(pq.ExecStatus, "TUPLES_CHUNK", -1))

    class DescribedLazily(psycopg.Cursor):  # type: ignore[type-arg]
        @property
        def description(self) -> LazyDescription | None:  # type: ignore[override]
            result = self.pgresult  # None, or columns: as psycopg's own property answers
            if result and (result.nfields or result.status in rows):
                return LazyDescription(self, result, result.nfields)
            return None

    return DescribedLazily
