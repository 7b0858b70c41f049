"""automations: triggers and their actions, some owned by a deployment

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = orchestrator.server.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger", JSON, nullable=False),
        sa.Column("actions", JSON, nullable=False),
        sa.Column("actions_on_trigger", JSON, nullable=False),
        sa.Column("actions_on_resolve", JSON, nullable=False),
        sa.Column("owner_resource", sa.String(length=1024), nullable=True),
        sa.Column("owner_index", sa.Integer(), nullable=True),
        sa.Column("created", UTC, nullable=False),
        sa.Column("updated", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automations")),
    )
    op.create_index("ix_automations_owner_resource_owner_index", "automations", ["owner_resource", "owner_index"],
                    unique=False)
    op.create_index("ix_automations_enabled", "automations", ["enabled"], unique=False)


def downgrade() -> None:
    op.drop_table("automations")
