"""task runs outside any flow: ``task_runs.flow_run_id`` may be NULL

A ``@task`` called outside a flow is a task run of its own (as in Prefect 3), recorded through
``POST /api/task_runs`` with no flow run.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.alter_column("flow_run_id", existing_type=sa.Uuid(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM task_runs WHERE flow_run_id IS NULL")
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.alter_column("flow_run_id", existing_type=sa.Uuid(), nullable=False)
