"""Engine, sessions and migrations for one database URL."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.sql import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def check_database(url: str) -> None:
    """Connect and bring the schema to head, or raise ``OrchestratorError`` with the reason on one
    line (a server refuses to start on a database it cannot use, rather than failing its first
    request, or its startup with a traceback)."""
    checked_engine(url).dispose()


def checked_engine(url: str) -> Engine:
    """``check_database``, returning its engine, whose connection is kept: ``orch server start``
    hands it to the app, so that the server's first use of the database (a service's first pass)
    takes that connection, instead of a second engine connecting again -- PostgreSQL starting one
    more backend, and SQLAlchemy's first-connect queries (the server's version, its settings) sent
    again. Raises what ``check_database`` raises, the engine disposed."""
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.errors import OrchestratorError
    from orchestrator.settings import redacted

    try:
        engine = make_engine(url)
    except (ImportError, SQLAlchemyError, OSError) as error:
        raise OrchestratorError(f"cannot use the database {redacted(url)}: {error}") from None
    try:
        migrate(engine)
    except (SQLAlchemyError, OSError) as error:
        engine.dispose()
        reason = " ".join(str(getattr(error, "orig", None) or error).split())  # psycopg's are multi-line
        raise OrchestratorError(f"cannot use the database {redacted(url)}: {reason}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# The ``session.info`` marks some after-commit hook reads (``on_commit_with``), with how many hooks
# read each: of every sessionmaker, so a mark another app's hook reads asks for a commit too.
_WATCHED: Counter[str] = Counter()


def commit_owed(session: Session) -> bool:
    """Whether committing ``session`` does anything but end its transaction: it holds ORM changes
    to flush, or a mark an after-commit hook reads. A session in autocommit (``AppContext.single_write``)
    whose statements are all committed already is closed instead: SQLAlchemy's commit (its events,
    the four hooks, the connection's commit and release) was ~45 µs of thread CPU a create
    (bench/RESULTS.md, issue 22)."""
    return bool(session.new or session.dirty or session.deleted) or any(flag in session.info for flag in _WATCHED)


class OneWrite:
    """What the create-run route's services use of a session, on one Core connection in autocommit
    (``AppContext.one_write``): ``get_bind``, ``connection``, ``info``; an ORM session is made on
    that connection only when one is asked for (``execute`` and ``scalar`` go to it: a target read
    again, a run found by its idempotency key, a pool's template). An ordinary create's one statement
    needs none, and the ORM session's checkout, transaction and close were ~200k instructions of the
    route's ~1,290k a create, a Core connection's ~40k (bench/RESULTS.md, issue 22, "round 6")."""

    def __init__(self, connection: Connection, sessions: sessionmaker[Session]) -> None:
        self._connection = connection
        self._sessions = sessions
        self._session: Session | None = None
        self.info: dict[Any, Any] = {}

    def get_bind(self) -> Engine:
        return self._connection.engine

    def connection(self) -> Connection:
        return self._connection

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.session().execute(*args, **kwargs)

    def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self.session().scalar(*args, **kwargs)

    def session(self) -> Session:
        """The ORM session on this connection (made at the first call), sharing ``info``."""
        if self._session is None:
            self._session = self._sessions(bind=self._connection)
            self._session.info.update(self.info)
            self.info = self._session.info  # one dict from here on: marks set before and after
        return self._session

    def finish(self) -> None:
        """The block ended without error: commit the ORM session when that does more than end its
        transaction (``commit_owed``: ORM changes, or a mark an after-commit hook reads)."""
        if any(flag in self.info for flag in _WATCHED) or (self._session is not None and commit_owed(self._session)):
            self.session().commit()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def on_commit(sessions: sessionmaker[Session], flag: str, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` after each commit of a transaction that set ``session.info[flag]`` (a
    service marks "this changes X" without knowing who listens); a rollback drops the mark, so
    a change that did not happen is never announced. Returns the function that removes the hook."""
    return on_commit_with(sessions, flag, lambda _mark: callback())


def on_commit_with(sessions: sessionmaker[Session], flag: str, callback: Callable[[Any], None]) -> Callable[[], None]:
    """``on_commit`` whose callback is given the mark the transaction left (what it changed)."""

    def committed(session: Session) -> None:
        # A savepoint's release fires after_commit too (SQLAlchemy 2.1): its changes are not
        # visible to anyone until the outer transaction commits, so the mark waits for that.
        if not session.in_nested_transaction():
            mark = session.info.pop(flag, None)
            if mark:
                callback(mark)

    def rolled_back(session: Session) -> None:
        # A savepoint rolled back keeps the mark: what the outer transaction changed besides it
        # must still be announced (an announcement too many only costs a re-read).
        if not session.in_nested_transaction():
            session.info.pop(flag, None)

    event.listen(sessions, "after_commit", committed)
    event.listen(sessions, "after_rollback", rolled_back)
    _WATCHED[flag] += 1

    def remove() -> None:
        event.remove(sessions, "after_commit", committed)
        event.remove(sessions, "after_rollback", rolled_back)
        _WATCHED[flag] -= 1
        if not _WATCHED[flag]:
            del _WATCHED[flag]

    return remove


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration. Safe with several servers starting at once on
    PostgreSQL: they queue on an advisory lock, and whoever comes after the first finds the
    database at head. Alembic, whose imports and script loading were a large share of a start, is
    only loaded for a database that has tables but is not at the scripts' head: a new, empty one
    gets the models' schema and is stamped at head, as alembic's documentation advises ("building
    an up to date database from scratch"); ``tests/integration/test_migrations.py`` keeps the
    models and the migrations' result equal."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(4300)"))
        heads = head_revisions()
        if heads and current_revisions(connection) == heads:
            return
        if len(heads) == 1 and not inspect(connection).get_table_names():
            _create_at_head(connection, next(iter(heads)))
            return
        _upgrade(connection)


def _create_at_head(connection: Connection, head: str) -> None:
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table

    from orchestrator.server.db import final_counts
    from orchestrator.server.db.models import Base

    # The table ``alembic stamp`` would write, so alembic takes over from here at the next release.
    version = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
    if connection.dialect.name == "postgresql":
        _create_in_one_round_trip(connection, Base.metadata, final_counts.POSTGRES_TRIGGERS, version)
    else:
        Base.metadata.create_all(connection)
        final_counts.install(connection)  # the triggers the migration that added their table creates
        version.create(connection)
    connection.execute(version.insert(), {"version_num": head})


def _create_in_one_round_trip(connection: Connection, metadata: Any, triggers: list[str], version: Any) -> None:
    """What ``create_all``, ``final_counts.install`` and ``version.create`` send, the same statements
    in the same order compiled by this connection's dialect, sent to PostgreSQL as one script (its
    simple query protocol runs them in this transaction): ~70 statements, each a round trip and
    SQLAlchemy's and the driver's work per statement, were ~20 ms of a new database's start CPU and
    more of its wall time. The database has no tables (``migrate`` checked), so nothing is checked
    first, as ``create_all`` would (no table exists to skip)."""
    from sqlalchemy.engine.mock import MockConnection

    statements: list[str] = []

    def collect(ddl: Any, *_args: Any, **_kwargs: Any) -> None:
        statements.append(str(ddl.compile(dialect=connection.dialect)).strip())

    into = MockConnection(connection.dialect, collect)
    metadata.create_all(into, checkfirst=False)
    statements += triggers
    version.create(into, checkfirst=False)
    # No parameters: psycopg sends the text as one simple query, however many statements it holds.
    connection.connection.driver_connection.execute(";\n".join(statements))


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*(?::[^=]*)?=(.*)$", re.MULTILINE)


@functools.cache
def head_revisions() -> frozenset[str]:
    """The head revision ids of ``migrations/versions``, read from the scripts' text (the ids alembic
    itself reads from the same module attributes), without importing alembic. Empty when a script
    does not spell its ids as plain literals. Any misreading makes the set differ from the
    database's, and then alembic decides: it can cost time, never skip a migration."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return frozenset()
        revisions.add(revision.group(1))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    return frozenset(revisions - parents)


# Whether ``alembic_version`` is there, asked of the catalog as the query reading it will find it (by
# the search path, on PostgreSQL). SQLAlchemy's ``inspect(connection).has_table`` compiles a reflection
# query over ``pg_catalog`` at every server's start: ~3 ms of CPU, against ~0.3 for this statement.
_HAS_VERSION_TABLE = {
    "postgresql": "SELECT to_regclass('alembic_version') IS NOT NULL",
    "sqlite": "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version')",
}


def current_revisions(connection: Connection) -> frozenset[str]:
    """What ``alembic_version`` says the database is at (empty for a database never migrated)."""
    query = _HAS_VERSION_TABLE.get(connection.dialect.name)
    present = connection.execute(text(query)).scalar() if query else inspect(connection).has_table("alembic_version")
    if not present:
        return frozenset()
    return frozenset(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
