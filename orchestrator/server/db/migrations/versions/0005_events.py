"""events and their related resources

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = orchestrator.server.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", ID, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("occurred", UTC, nullable=False),
        sa.Column("received", UTC, nullable=False),
        sa.Column("event", sa.String(length=1024), nullable=False),
        sa.Column("resource_id", sa.String(length=1024), nullable=False),
        sa.Column("resource", JSON, nullable=False),
        sa.Column("related", JSON, nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("follows", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("id", name=op.f("uq_events_id")),
    )
    op.create_index("ix_events_occurred_seq", "events", ["occurred", "seq"], unique=False)
    op.create_index("ix_events_resource_id_occurred", "events", ["resource_id", "occurred"], unique=False)
    op.create_index("ix_events_event_occurred", "events", ["event", "occurred"], unique=False)
    op.create_table(
        "event_resources",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_seq", ID, nullable=False),
        sa.Column("resource_id", sa.String(length=1024), nullable=False),
        sa.Column("role", sa.String(length=255), nullable=False),
        sa.Column("occurred", UTC, nullable=False),
        sa.ForeignKeyConstraint(["event_seq"], ["events.seq"], name=op.f("fk_event_resources_event_seq_events"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_resources")),
    )
    op.create_index(op.f("ix_event_resources_event_seq"), "event_resources", ["event_seq"], unique=False)
    op.create_index("ix_event_resources_resource_id_occurred", "event_resources", ["resource_id", "occurred"],
                    unique=False)


def downgrade() -> None:
    op.drop_table("event_resources")
    op.drop_table("events")
