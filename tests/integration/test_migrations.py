"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL: a new
database is created from the models and stamped at head (``migrate()``), one of an older release is
brought there by the migrations, and both must end the same. Running ``migrate()`` again is
harmless (every server start runs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from orchestrator.server.db.session import current_revisions, head_revisions, make_engine, migrate
from tests.conftest import fresh_database
from tests.migrations import differences_from_the_models, upgrade_to


@pytest.fixture(params=["sqlite", "postgresql"])
def two_empty_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    pg_admin = request.getfixturevalue("pg_admin")
    with fresh_database(pg_admin) as first, fresh_database(pg_admin) as second:
        yield first, second


def schema(url: str) -> dict[str, Any]:
    """Everything the database says about its tables: columns (type, nullability, server default),
    primary key, indexes, unique constraints and foreign keys."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            return {table: {
                # By name: a migration adds columns at the end, the models list them where they belong.
                "columns": sorted((c["name"], str(c["type"]), c["nullable"], c.get("default"))
                                  for c in found.get_columns(table)),
                "primary key": found.get_pk_constraint(table),
                "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(table)),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(table)),
                "foreign keys": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"],
                                        f.get("options", {}).get("ondelete")) for f in found.get_foreign_keys(table)),
            } for table in sorted(found.get_table_names())}
    finally:
        engine.dispose()


def test_migrations_match_the_models(two_empty_databases: tuple[str, str]) -> None:
    migrated, _ = two_empty_databases
    upgrade_to(migrated, "head")  # the migration scripts, one after the other

    assert differences_from_the_models(migrated) == []


def test_a_database_created_from_the_models_equals_one_built_by_the_migrations(
    two_empty_databases: tuple[str, str],
) -> None:
    migrated, created = two_empty_databases
    upgrade_to(migrated, "head")
    engine = make_engine(created)
    try:
        migrate(engine)  # empty: created from the models, stamped at head
        with engine.connect() as connection:
            assert current_revisions(connection) == head_revisions()
    finally:
        engine.dispose()

    assert schema(created) == schema(migrated)


def test_migrate_again_is_harmless(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        before = schema(database_url)
        migrate(engine)
        migrate(engine)
    finally:
        engine.dispose()

    assert schema(database_url) == before


def _triggers(url: str) -> list[tuple[str, str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(connection.execute(text(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
                "UNION ALL SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'flow_run_final_counts%'")).all())
    finally:
        engine.dispose()


def test_a_new_postgresql_database_is_created_in_one_script_with_the_migrations_triggers(pg_admin: Any) -> None:
    """The models' tables, indexes, the final counts' triggers and the version table go to PostgreSQL
    as one script (``session._create_in_one_round_trip``), not one statement each (~70)."""
    with fresh_database(pg_admin) as migrated, fresh_database(pg_admin) as created:
        upgrade_to(migrated, "head")
        engine = make_engine(created)
        sent: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: sent.append(statement))
        try:
            migrate(engine)
        finally:
            engine.dispose()
        assert not any(statement.lstrip().upper().startswith("CREATE") for statement in sent), sent
        assert len(sent) < 10, sent
        assert _triggers(created) == _triggers(migrated) != []
        assert schema(created) == schema(migrated)
