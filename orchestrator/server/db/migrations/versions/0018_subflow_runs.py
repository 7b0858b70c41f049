"""subflow runs: ``flow_runs.parent_task_run_id``

A flow called inside a tracked flow run is a flow run of its own (as in Prefect 3), whose
``parent_task_run_id`` is the task run standing for the call in its caller's run. A partial index
finds a run's subflow runs (few runs are subflows).

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

SUBFLOWS = "parent_task_run_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_task_run_id", sa.Uuid(), nullable=True))
        batch_op.create_index("ix_flow_runs_parent_task_run_id", ["parent_task_run_id"], unique=False,
                              postgresql_where=sa.text(SUBFLOWS), sqlite_where=sa.text(SUBFLOWS))


def downgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_runs_parent_task_run_id")
        batch_op.drop_column("parent_task_run_id")
