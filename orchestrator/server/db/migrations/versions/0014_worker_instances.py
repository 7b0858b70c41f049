"""the process holding each worker name: ``workers.instance_id``

A worker process sends an id of its own (made at its start) with every heartbeat. The name's row
keeps the id of the process that holds it, so a beat of another process under that name -- one
that was cut off from the API while the name went OFFLINE and was taken by a new worker -- is
refused while the holder is ONLINE. Empty for a worker that sends no id (an older release): such a
holder's beats are taken as before.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("instance_id")
