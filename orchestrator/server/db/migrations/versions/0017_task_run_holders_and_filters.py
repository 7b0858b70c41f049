"""task runs outside flows get a holder's lease; the UI's task-run filters get their indexes

A program running tasks outside any flow holds one lease (``task_run_holders``) for all its open
task runs (``task_runs.holder_id``); the reaper marks those of a silent holder CRASHED, found
through a partial index of open held task runs only. The UI's task runs page, filtered by task or
by state, reads along (task_name, created, id) and (state_type, created, id) instead of walking
every newer task run on (created, id).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

OPEN_HELD = "holder_id IS NOT NULL AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')"


def upgrade() -> None:
    op.create_table(
        "task_run_holders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_run_holders")),
    )
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("holder_id", sa.Uuid(), nullable=True))
        batch_op.create_index("ix_task_runs_open_holder_id", ["holder_id"], unique=False,
                              postgresql_where=sa.text(OPEN_HELD), sqlite_where=sa.text(OPEN_HELD))
        batch_op.create_index("ix_task_runs_task_name_created_id", ["task_name", "created", "id"], unique=False)
        batch_op.create_index("ix_task_runs_state_type_created_id", ["state_type", "created", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_task_runs_state_type_created_id")
        batch_op.drop_index("ix_task_runs_task_name_created_id")
        batch_op.drop_index("ix_task_runs_open_holder_id")
        batch_op.drop_column("holder_id")
    op.drop_table("task_run_holders")
