"""index of every task run, newest first: the web UI's task runs page

The UI lists every task run, of a flow run or of none, newest first (``created``, ``id``), as
Prefect's task runs view does; without this index each page would read and sort the whole table.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.create_index("ix_task_runs_created_id", ["created", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_task_runs_created_id")
