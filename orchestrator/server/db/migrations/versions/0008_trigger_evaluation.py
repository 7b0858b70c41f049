"""trigger evaluation state (cursor, buckets, composite firings, held events), outgoing calls,
incoming webhooks

Revision ID: 0008
Revises: 0007
"""

import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = orchestrator.server.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trigger_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("floor", sa.BigInteger(), nullable=False),
        sa.Column("handled", JSON, nullable=False),
        sa.Column("missing", JSON, nullable=False),
        sa.Column("updated", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_trigger_cursors")),
    )
    # Evaluation starts with the events stored after this migration (not the history), and from
    # the first one: the cursor exists before any server starts (triggers/cursor.py).
    top = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM events")).scalar()
    cursors = sa.table("trigger_cursors", sa.column("name", sa.String()), sa.column("floor", sa.BigInteger()),
                       sa.column("handled", JSON), sa.column("missing", JSON), sa.column("updated", UTC))
    op.bulk_insert(cursors, [{"name": "triggers", "floor": top, "handled": [], "missing": {},
                              "updated": datetime.datetime.now(datetime.timezone.utc)}])
    op.create_table(
        "automation_buckets",
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("bucket_key", sa.String(length=2048), nullable=False),
        sa.Column("window_start", UTC, nullable=False),
        sa.Column("window_end", UTC, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_event", JSON, nullable=True),
        sa.Column("updated", UTC, nullable=False),
        sa.ForeignKeyConstraint(["automation_id"], ["automations.id"],
                                name=op.f("fk_automation_buckets_automation_id_automations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("automation_id", "trigger_id", "bucket_key", name=op.f("pk_automation_buckets")),
    )
    op.create_index("ix_automation_buckets_window_end", "automation_buckets", ["window_end"], unique=False)
    op.create_table(
        "automation_child_firings",
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("firing_id", sa.Uuid(), nullable=False),
        sa.Column("fired_at", UTC, nullable=False),
        sa.Column("event", JSON, nullable=True),
        sa.ForeignKeyConstraint(["automation_id"], ["automations.id"],
                                name=op.f("fk_automation_child_firings_automation_id_automations"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("automation_id", "parent_id", "child_id", name=op.f("pk_automation_child_firings")),
    )
    op.create_table(
        "automation_held_events",
        sa.Column("event_seq", SEQ, nullable=False),
        sa.Column("follows", sa.Uuid(), nullable=False),
        sa.Column("held_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("event_seq", name=op.f("pk_automation_held_events")),
    )
    op.create_index(op.f("ix_automation_held_events_follows"), "automation_held_events", ["follows"], unique=False)
    op.create_table(
        "automation_calls",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("firing_id", sa.Uuid(), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", JSON, nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("created", UTC, nullable=False),
        sa.Column("claimed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automation_calls")),
        sa.UniqueConstraint("firing_id", "action_index", name=op.f("uq_automation_calls_firing_id_action_index")),
    )
    op.create_index("ix_automation_calls_state", "automation_calls", ["state"], unique=False)
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created", UTC, nullable=False),
        sa.Column("updated", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sa.UniqueConstraint("name", name=op.f("uq_webhooks_name")),
        sa.UniqueConstraint("slug", name=op.f("uq_webhooks_slug")),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
    op.drop_table("automation_calls")
    op.drop_table("automation_held_events")
    op.drop_table("automation_child_firings")
    op.drop_table("automation_buckets")
    op.drop_table("trigger_cursors")
