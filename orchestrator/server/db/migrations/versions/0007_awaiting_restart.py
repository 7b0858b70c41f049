"""a run waiting for any worker after a crash restart or a lost retry is named AwaitingRestart

AwaitingRetry now means "held by its flow-run process between in-process retries" and nothing
else (``orchestrator/states.py``); the rules read the name, not the ``worker_name`` column. Runs
named AwaitingRetry that nobody holds (written before this change) get the new name, or no worker
could claim them.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE flow_runs SET state_name = 'AwaitingRestart' "
               "WHERE state_type = 'SCHEDULED' AND state_name = 'AwaitingRetry' AND worker_name IS NULL")


def downgrade() -> None:
    op.execute("UPDATE flow_runs SET state_name = 'AwaitingRetry' "
               "WHERE state_type = 'SCHEDULED' AND state_name = 'AwaitingRestart'")
