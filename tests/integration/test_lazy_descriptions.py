"""A result's column descriptions on PostgreSQL (``orchestrator/sql.py``): the same as psycopg's
own, read at once or after the cursor executed another statement, and built only when read, so
a statement SQLAlchemy already knows the result of (a claim's, a transition's) builds none.
PostgreSQL only: SQLite's driver is another."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from orchestrator import schemas
from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
from orchestrator.server.services import claims, deployments, flow_runs, work_pools
from orchestrator.states import StateType

_QUERY = ("SELECT 1::int AS a, 'x'::varchar(9) AS b, 2.5::numeric(6, 2) AS c, now() AS d, "
          "'{}'::jsonb AS e, ARRAY[1, 2] AS f, NULL::uuid AS g")


def _described(cursor: Any) -> list[tuple[Any, ...]]:
    return [tuple(column) + (column.type_display,) for column in cursor.description]


def test_descriptions_are_psycopgs_own(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            ours = connection.connection.dbapi_connection.cursor()
            ours.execute(_QUERY)
            kept = ours.description
            ours.execute("SELECT 'other' AS z")  # the kept description still describes its own result
            with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql")) as plain:
                theirs = plain.cursor()
                theirs.execute(_QUERY)
                assert [tuple(c) + (c.type_display,) for c in kept] == _described(theirs)
                assert len(kept) == 7 and [c.name for c in kept] == list("abcdefg")
                theirs.execute("SELECT 'other' AS z")
                assert _described(ours) == _described(theirs)
                theirs.execute("SET TIME ZONE 'UTC'")  # no result: no description
                ours.execute("SET TIME ZONE 'UTC'")
                assert ours.description is None and theirs.description is None
                ours.execute("SELECT WHERE false")  # a result of no columns: an empty description
                theirs.execute("SELECT WHERE false")
                assert list(ours.description) == list(theirs.description) == []
    finally:
        engine.dispose()


def test_a_known_statement_builds_no_column(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(postgres_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        deployment, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        ids = [flow_runs.create(session, deployment.id, schemas.FlowRunCreate(), now=dt.datetime.now(dt.UTC))[0].id
               for _ in range(2)]

    def run_path(run_id: uuid.UUID) -> None:
        with sessions.begin() as session:
            assert isinstance(claims.claim(session, run_id, "w"), claims.Claimed)
        for state in (StateType.RUNNING, StateType.COMPLETED):
            with sessions.begin() as session:
                flow_runs.set_state(session, run_id, schemas.StateCreate(type=state, worker_name="w"))

    try:
        run_path(ids[0])  # SQLAlchemy learns each statement's result (reading its description)
        built = 0
        original = psycopg.Column.__init__

        def counted(self: Any, *args: Any) -> None:
            nonlocal built
            built += 1
            original(self, *args)

        monkeypatch.setattr(psycopg.Column, "__init__", counted)
        run_path(ids[1])
        # ~200 before (the claim's read ~100, each transition's RETURNING ~30). What is left: the
        # events' insert (its one column, once a transition), whose result SQLAlchemy does not keep.
        assert built <= 3
    finally:
        engine.dispose()


def test_a_psycopg_whose_columns_read_otherwise_keeps_its_own_cursor(postgres_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The lazy class is used only once a process's first connection has seen it describe a result as
    psycopg does: a psycopg whose ``Column`` reads its cursor otherwise (here: no ``_encoding``) gets
    its own cursor class back, and queries answer as ever."""
    from orchestrator import sql

    class Elsewhere:
        __slots__ = ("adapters", "pgresult")

        def __init__(self, pgresult: Any, _encoding: str, adapters: Any) -> None:
            self.pgresult, self.adapters = pgresult, adapters

    monkeypatch.setattr(sql, "_CHECKED", [])
    monkeypatch.setattr(sql, "_Result", Elsewhere)
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert type(connection.connection.dbapi_connection.cursor()) is psycopg.Cursor
            assert connection.exec_driver_sql("SELECT 'x' AS b").mappings().all() == [{"b": "x"}]
    finally:
        engine.dispose()
    monkeypatch.undo()
    engine = make_engine(postgres_url)  # the class as it is: the lazy cursor
    try:
        with engine.connect() as connection:
            assert type(connection.connection.dbapi_connection.cursor()) is sql.described_lazily()
    finally:
        engine.dispose()
