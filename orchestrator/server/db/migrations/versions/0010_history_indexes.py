"""history does not slow anything: indexes for newest-first lists read by key, and the counts of
runs in final states kept by triggers (db/final_counts.py)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from orchestrator.server.db import final_counts

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_runs_deployment_id"))
        batch_op.drop_index(batch_op.f("ix_flow_runs_work_pool_name"))
        batch_op.create_index("ix_flow_runs_expected_start_time_id", ["expected_start_time", "id"], unique=False)
        batch_op.create_index("ix_flow_runs_deployment_id_expected_start_time", ["deployment_id", "expected_start_time"],
                              unique=False)
        batch_op.create_index("ix_flow_runs_work_pool_name_expected_start_time",
                              ["work_pool_name", "expected_start_time"], unique=False)
        batch_op.create_index("ix_flow_runs_state_name_expected_start_time", ["state_name", "expected_start_time"],
                              unique=False)
    op.create_table(
        "flow_run_final_counts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state_type", sa.String(length=16), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_run_final_counts")),
    )
    connection = op.get_bind()
    final_counts.seed(connection)
    final_counts.install(connection)


def downgrade() -> None:
    final_counts.uninstall(op.get_bind())
    op.drop_table("flow_run_final_counts")
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_runs_state_name_expected_start_time")
        batch_op.drop_index("ix_flow_runs_work_pool_name_expected_start_time")
        batch_op.drop_index("ix_flow_runs_deployment_id_expected_start_time")
        batch_op.drop_index("ix_flow_runs_expected_start_time_id")
        batch_op.create_index(batch_op.f("ix_flow_runs_work_pool_name"), ["work_pool_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_flow_runs_deployment_id"), ["deployment_id"], unique=False)
