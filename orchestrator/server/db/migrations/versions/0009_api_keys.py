"""api_keys: keys with scopes, stored as their SHA-256 (docs/security.md)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = orchestrator.server.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("pools", JSON, nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("created", UTC, nullable=False),
        sa.Column("expires", UTC, nullable=True),
        sa.Column("revoked", UTC, nullable=True),
        sa.Column("last_used", UTC, nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["flow_runs.id"], name=op.f("fk_api_keys_run_id_flow_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_run_id"), "api_keys", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_table("api_keys")
