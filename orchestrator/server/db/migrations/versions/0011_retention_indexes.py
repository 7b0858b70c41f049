"""indexes for retention: finished runs by end time, logs by timestamp

Retention (``orchestrator/server/retention.py``, ``orch db prune``) deletes the oldest finished runs
and the oldest logs in small batches, walking each table in time order; without these indexes every
batch would scan the whole table.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.create_index("ix_flow_runs_end_time_id", ["end_time", "id"], unique=False)
    with op.batch_alter_table("logs", schema=None) as batch_op:
        batch_op.create_index("ix_logs_timestamp_id", ["timestamp", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("logs", schema=None) as batch_op:
        batch_op.drop_index("ix_logs_timestamp_id")
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_runs_end_time_id")
