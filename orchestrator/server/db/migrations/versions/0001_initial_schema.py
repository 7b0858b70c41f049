"""initial schema

Revision ID: 0001
Revises: 
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orchestrator.server.db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('flows',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flows')),
    sa.UniqueConstraint('name', name=op.f('uq_flows_name'))
    )
    op.create_table('work_pools',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('base_job_template', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('concurrency_limit', sa.Integer(), nullable=True),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('default_queue_name', sa.String(length=255), nullable=False),
    sa.Column('created', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_work_pools')),
    sa.UniqueConstraint('name', name=op.f('uq_work_pools_name'))
    )
    op.create_table('deployments',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('flow_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('entrypoint', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('parameter_openapi_schema', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('enforce_parameter_schema', sa.Boolean(), nullable=False),
    sa.Column('schedules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('triggers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('version', sa.String(length=255), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('work_pool_name', sa.String(length=255), nullable=False),
    sa.Column('work_queue_name', sa.String(length=255), nullable=True),
    sa.Column('job_variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('pull_steps', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('concurrency_limit', sa.Integer(), nullable=True),
    sa.Column('created', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['flow_id'], ['flows.id'], name=op.f('fk_deployments_flow_id_flows'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments')),
    sa.UniqueConstraint('flow_id', 'name', name=op.f('uq_deployments_flow_id_name'))
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_flow_id'), ['flow_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_paused'), ['paused'], unique=False)
        batch_op.create_index(batch_op.f('ix_deployments_work_pool_name'), ['work_pool_name'], unique=False)

    op.create_table('work_queues',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('pool_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('concurrency_limit', sa.Integer(), nullable=True),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('created', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['work_pools.id'], name=op.f('fk_work_queues_pool_id_work_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_work_queues')),
    sa.UniqueConstraint('pool_id', 'name', name=op.f('uq_work_queues_pool_id_name'))
    )
    with op.batch_alter_table('work_queues', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_work_queues_pool_id'), ['pool_id'], unique=False)

    op.create_table('workers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('pool_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_heartbeat', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['work_pools.id'], name=op.f('fk_workers_pool_id_work_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers')),
    sa.UniqueConstraint('pool_id', 'name', name=op.f('uq_workers_pool_id_name'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workers_pool_id'), ['pool_id'], unique=False)

    op.create_table('flow_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('flow_id', sa.Uuid(), nullable=False),
    sa.Column('deployment_id', sa.Uuid(), nullable=True),
    sa.Column('deployment_version', sa.String(length=255), nullable=True),
    sa.Column('work_pool_name', sa.String(length=255), nullable=True),
    sa.Column('work_queue_name', sa.String(length=255), nullable=True),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('job_variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('state_type', sa.String(length=16), nullable=False),
    sa.Column('state_name', sa.String(length=64), nullable=False),
    sa.Column('state_message', sa.Text(), nullable=True),
    sa.Column('state_timestamp', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expected_start_time', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('start_time', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('end_time', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('run_count', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('worker_name', sa.String(length=255), nullable=True),
    sa.Column('infrastructure_id', sa.String(length=255), nullable=True),
    sa.Column('dispatched_at', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], name=op.f('fk_flow_runs_deployment_id_deployments'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['flow_id'], ['flows.id'], name=op.f('fk_flow_runs_flow_id_flows'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_runs')),
    sa.UniqueConstraint('deployment_id', 'idempotency_key', name=op.f('uq_flow_runs_deployment_id_idempotency_key'))
    )
    with op.batch_alter_table('flow_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flow_runs_deployment_id'), ['deployment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_runs_flow_id'), ['flow_id'], unique=False)
        batch_op.create_index('ix_flow_runs_state_type_expected_start_time', ['state_type', 'expected_start_time'], unique=False)
        batch_op.create_index('ix_flow_runs_tags', ['tags'], unique=False, postgresql_using='gin')
        batch_op.create_index(batch_op.f('ix_flow_runs_work_pool_name'), ['work_pool_name'], unique=False)

    op.create_table('flow_run_states',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('flow_run_id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('timestamp', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['flow_run_id'], ['flow_runs.id'], name=op.f('fk_flow_run_states_flow_run_id_flow_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_run_states'))
    )
    with op.batch_alter_table('flow_run_states', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flow_run_states_flow_run_id'), ['flow_run_id'], unique=False)

    op.create_table('logs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('flow_run_id', sa.Uuid(), nullable=False),
    sa.Column('timestamp', orchestrator.server.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['flow_run_id'], ['flow_runs.id'], name=op.f('fk_logs_flow_run_id_flow_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_logs'))
    )
    with op.batch_alter_table('logs', schema=None) as batch_op:
        batch_op.create_index('ix_logs_flow_run_id_id', ['flow_run_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('logs', schema=None) as batch_op:
        batch_op.drop_index('ix_logs_flow_run_id_id')

    op.drop_table('logs')
    with op.batch_alter_table('flow_run_states', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flow_run_states_flow_run_id'))

    op.drop_table('flow_run_states')
    with op.batch_alter_table('flow_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flow_runs_work_pool_name'))
        batch_op.drop_index('ix_flow_runs_tags', postgresql_using='gin')
        batch_op.drop_index('ix_flow_runs_state_type_expected_start_time')
        batch_op.drop_index(batch_op.f('ix_flow_runs_flow_id'))
        batch_op.drop_index(batch_op.f('ix_flow_runs_deployment_id'))

    op.drop_table('flow_runs')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workers_pool_id'))

    op.drop_table('workers')
    with op.batch_alter_table('work_queues', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_work_queues_pool_id'))

    op.drop_table('work_queues')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_work_pool_name'))
        batch_op.drop_index(batch_op.f('ix_deployments_paused'))
        batch_op.drop_index(batch_op.f('ix_deployments_flow_id'))

    op.drop_table('deployments')
    op.drop_table('work_pools')
    op.drop_table('flows')
