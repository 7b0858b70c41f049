"""liveness and concurrency: run heartbeats, crash restarts, collision strategy

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import orchestrator.server.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("concurrency_collision_strategy", sa.String(length=16), nullable=False,
                                      server_default="ENQUEUE"))
        batch_op.add_column(sa.Column("crash_retries", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("crash_restarts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_flow_runs_worker_name", ["worker_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_runs_worker_name")
        batch_op.drop_column("crash_restarts")
        batch_op.drop_column("heartbeat_at")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("crash_retries")
        batch_op.drop_column("concurrency_collision_strategy")
