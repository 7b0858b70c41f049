"""The database schema built by the migration scripts, and compared with the models."""

from __future__ import annotations

from typing import Any


def upgrade_to(database_url: str, revision: str) -> None:
    """Run the migration scripts up to ``revision`` (an older one: as a server of an older release
    left the database; "head": the schema built the long way, as an upgrade builds it)."""
    from alembic import command
    from alembic.config import Config

    from orchestrator.server.db.session import MIGRATIONS, make_engine

    engine = make_engine(database_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def differences_from_the_models(database_url: str) -> list[Any]:
    """alembic's autogenerate comparison of the database with ``orchestrator.server.db.models``: [] when
    they match."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from orchestrator.server.db.models import Base
    from orchestrator.server.db.session import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()
