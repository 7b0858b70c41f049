"""schedules: a deployment_schedules table (replacing deployments.schedules) and catch-up policy

Revision ID: 0003
Revises: 0002
"""

import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "deployment_schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=128), nullable=False),
        sa.Column("schedule", JSON, nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("parameters", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scheduled_until", orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created", orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated", orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"],
                                name=op.f("fk_deployment_schedules_deployment_id_deployments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_schedules")),
        sa.UniqueConstraint("deployment_id", "slug", name=op.f("uq_deployment_schedules_deployment_id_slug")),
    )
    op.create_index(op.f("ix_deployment_schedules_deployment_id"), "deployment_schedules", ["deployment_id"],
                    unique=False)
    _copy_schedules()
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("catchup", sa.String(length=8), nullable=False, server_default="ALL"))
        batch_op.add_column(sa.Column("max_late_runs", sa.Integer(), nullable=True))
    # Native ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch "copy and move" would drop and
    # recreate ``deployments``, and with foreign keys on that would cascade into flow_runs.
    op.drop_column("deployments", "schedules")


def _copy_schedules() -> None:
    """Carry the schedules stored as JSON on deployments over to rows; skip unusable ones."""
    from orchestrator.schedules import ScheduleError, default_slug, parse, to_storage

    bind = op.get_bind()
    deployments = sa.table("deployments", sa.column("id", sa.Uuid()), sa.column("schedules", JSON))
    target = sa.table(
        "deployment_schedules", *(sa.column(c) for c in ("id", "deployment_id", "slug", "schedule", "timezone",
                                                          "active", "parameters", "version", "created",
                                                          "updated")))
    target.c.schedule.type = JSON
    target.c.parameters.type = JSON
    target.c.id.type = sa.Uuid()
    target.c.deployment_id.type = sa.Uuid()
    target.c.created.type = orchestrator.server.db.types.UTCDateTime(timezone=True)
    target.c.updated.type = orchestrator.server.db.types.UTCDateTime(timezone=True)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for deployment_id, schedules in bind.execute(sa.select(deployments.c.id, deployments.c.schedules)):
        seen = set()
        for entry in schedules or []:
            if not isinstance(entry, dict):
                continue
            try:
                spec = parse(entry)
            except ScheduleError:
                continue
            slug = str(entry.get("slug") or default_slug(spec))
            if slug in seen:
                continue
            seen.add(slug)
            rows.append({"id": uuid.uuid4(), "deployment_id": deployment_id, "slug": slug,
                         "schedule": to_storage(spec), "timezone": spec.timezone,
                         "active": bool(entry.get("active", True)), "parameters": entry.get("parameters") or {},
                         "version": 0, "created": now, "updated": now})
    if rows:
        bind.execute(sa.insert(target), rows)


def downgrade() -> None:
    op.add_column("deployments", sa.Column("schedules", JSON, nullable=False, server_default="[]"))
    op.drop_column("deployments", "max_late_runs")
    op.drop_column("deployments", "catchup")
    op.drop_index(op.f("ix_deployment_schedules_deployment_id"), table_name="deployment_schedules")
    op.drop_table("deployment_schedules")
