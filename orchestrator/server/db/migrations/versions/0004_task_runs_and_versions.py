"""task runs, the flow version of each run, deployment history, runs looked up by name

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = orchestrator.server.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployment_versions",
        sa.Column("id", ID, nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column("changes", JSON, nullable=False),
        sa.Column("api_key_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created", UTC, nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"],
                                name=op.f("fk_deployment_versions_deployment_id_deployments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_versions")),
    )
    op.create_index("ix_deployment_versions_deployment_id_id", "deployment_versions", ["deployment_id", "id"],
                    unique=False)
    op.create_table(
        "task_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("state_type", sa.String(length=16), nullable=False),
        sa.Column("state_name", sa.String(length=64), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("start_time", UTC, nullable=True),
        sa.Column("end_time", UTC, nullable=True),
        sa.Column("created", UTC, nullable=False),
        sa.Column("updated", UTC, nullable=False),
        sa.ForeignKeyConstraint(["flow_run_id"], ["flow_runs.id"], name=op.f("fk_task_runs_flow_run_id_flow_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
    )
    op.create_index("ix_task_runs_flow_run_id_created", "task_runs", ["flow_run_id", "created"], unique=False)
    # Native ALTER TABLE ... ADD COLUMN (nullable, no default): no copy of flow_runs on SQLite.
    op.add_column("flow_runs", sa.Column("flow_version", sa.String(length=255), nullable=True))
    # `orch flow-run inspect|cancel|logs NAME` and GET /api/flow_runs?name= look runs up by name.
    op.create_index(op.f("ix_flow_runs_name"), "flow_runs", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_flow_runs_name"), table_name="flow_runs")
    op.drop_column("flow_runs", "flow_version")
    op.drop_index("ix_task_runs_flow_run_id_created", table_name="task_runs")
    op.drop_table("task_runs")
    op.drop_index("ix_deployment_versions_deployment_id_id", table_name="deployment_versions")
    op.drop_table("deployment_versions")
