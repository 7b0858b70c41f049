"""fewer index entries and key checks per new run and per event's related resource

A scheduler's first pass over 100,000 deployments writes 300,000 runs, each with its first state,
its event and the event's related resources (issue 20, point 6); every index entry and foreign-key
check of those rows is paid 300,000 times:

- ``event_resources.event_seq`` loses its foreign key: the rows are written in the statement that
  stores their event and deleted before it (retention), never otherwise; the key checked and
  locked the event once per row.
- ``flow_runs``: the index on ``flow_id`` goes (no query reads runs by flow; flows are never
  deleted), and the indexes on ``end_time`` (retention) and ``worker_name`` cover only the rows
  that have one: a new run has neither.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _where(column: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(f"{column} IS NOT NULL"), "sqlite_where": sa.text(f"{column} IS NOT NULL")}


def upgrade() -> None:
    with op.batch_alter_table("event_resources", schema=None) as batch_op:
        batch_op.drop_constraint("fk_event_resources_event_seq_events", type_="foreignkey")
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_runs_flow_id")
        batch_op.drop_index("ix_flow_runs_end_time_id")
        batch_op.create_index("ix_flow_runs_end_time_id", ["end_time", "id"], unique=False, **_where("end_time"))
        batch_op.drop_index("ix_flow_runs_worker_name")
        batch_op.create_index("ix_flow_runs_worker_name", ["worker_name"], unique=False, **_where("worker_name"))


def downgrade() -> None:
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_runs_worker_name")
        batch_op.create_index("ix_flow_runs_worker_name", ["worker_name"], unique=False)
        batch_op.drop_index("ix_flow_runs_end_time_id")
        batch_op.create_index("ix_flow_runs_end_time_id", ["end_time", "id"], unique=False)
        batch_op.create_index("ix_flow_runs_flow_id", ["flow_id"], unique=False)
    with op.batch_alter_table("event_resources", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_event_resources_event_seq_events", "events", ["event_seq"], ["seq"],
                                    ondelete="CASCADE")
