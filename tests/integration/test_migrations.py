"""The migrations create exactly the tables the models describe, on SQLite and PostgreSQL, and
running them twice is harmless (every server start runs them)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from orchestrator.db.models import Base
from orchestrator.db.session import make_engine, migrate


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
