"""index for the API keys' list order: oldest first, by (created, name)

Every claim on a server with keys makes the run a key of its own, so the table grows with the runs;
``GET /api/api_keys?include_run_keys=true`` pages through it in this order, which without the index
is a sort of the whole table for every page.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_created_name", ["created", "name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_created_name")
