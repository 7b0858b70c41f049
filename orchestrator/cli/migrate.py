"""``orch server migrate``: bring the database schema to the newest migration, then exit.

``orch server start`` does the same before it serves; this command lets a deployment run the step
on its own (a Helm Job, a release pipeline) so that a failing migration stops the rollout.
"""

from __future__ import annotations

from orchestrator.cli.output import fail


def migrate() -> None:
    """Apply the database migrations (ORCH_DATABASE_URL) and exit."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.server.db.session import make_engine
    from orchestrator.server.db.session import migrate as apply_migrations
    from orchestrator.settings import Settings

    url = Settings().resolved_database_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
        engine = make_engine(url)
    except SQLAlchemyError as error:  # not a URL, or an unknown driver
        fail(f"ORCH_DATABASE_URL is not a usable SQLAlchemy URL: {error}")
    try:
        apply_migrations(engine)
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        fail(f"cannot migrate the database at {shown}: {reason}")
    finally:
        engine.dispose()
    print(f"database at {shown} is at migration {revision}")
