"""SQLAlchemy 2 tables. The migrations in ``migrations/versions`` create exactly these.

Most are mapped classes. Three are Core ``Table``s only: ``task_run_holders`` and
``flow_run_final_counts``, only ever written and read by Core statements, and ``webhooks``, whose
class (``services.webhooks.WebhookRow``) is mapped onto it when a server first serves a webhook. A
mapped class costs every server's start ~0.4 ms of CPU and ~10 KB a column (its declaration, its
attributes' instrumentation, their configuration at the first ORM statement), a Core table about a
fifth of that (bench/RESULTS.md, issue 22, "tables few servers use").
"""

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    event,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orchestrator.server.db.base import Base, TimestampMixin

# A task run outside any flow, not final yet: what the reaper may have to recover.
OPEN_TASK_RUN_STATES = ("PENDING", "RUNNING", "SCHEDULED")  # a task run's states before its end
OPEN_HELD_TASK_RUNS = f"holder_id IS NOT NULL AND state_type IN {OPEN_TASK_RUN_STATES}"

# The trigger evaluator's tables are part of this schema (one metadata, ``m.TriggerCursor`` ...).
from orchestrator.server.db.trigger_tables import (  # noqa: F401
    AutomationBucket,
    AutomationCall,
    AutomationChildFiring,
    AutomationHeldEvent,
    TriggerCursor,
)
from orchestrator.server.db.types import JSONType, UTCDateTime, utcnow


class Flow(TimestampMixin, Base):
    __tablename__ = "flows"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class WorkPool(TimestampMixin, Base):
    __tablename__ = "work_pools"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    base_job_template: Mapped[dict[str, Any]] = mapped_column(default=dict)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    default_queue_name: Mapped[str] = mapped_column(String(255), default="default")


class WorkQueue(TimestampMixin, Base):
    __tablename__ = "work_queues"
    __table_args__ = (UniqueConstraint("pool_id", "name"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    pool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("work_pools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=1)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("pool_id", "name"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    pool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("work_pools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_heartbeat: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The process holding the name (the id it sends with its heartbeats); None: a worker that sends none.
    instance_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class Deployment(TimestampMixin, Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("flow_id", "name"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    flow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    entrypoint: Mapped[str] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parameter_openapi_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enforce_parameter_schema: Mapped[bool] = mapped_column(Boolean, default=True)
    # Rows of ``deployment_schedules``; the database deletes them with the deployment.
    schedules: Mapped[list["DeploymentSchedule"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="DeploymentSchedule.created"
    )
    paused: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    triggers: Mapped[list[Any]] = mapped_column(default=list)
    version: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    work_pool_name: Mapped[str] = mapped_column(String(255), index=True)
    work_queue_name: Mapped[str | None] = mapped_column(String(255))
    job_variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pull_steps: Mapped[list[Any]] = mapped_column(default=list)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    # ENQUEUE: a run over the limit waits (AwaitingConcurrencySlot); CANCEL_NEW: it is cancelled.
    concurrency_collision_strategy: Mapped[str] = mapped_column(String(16), default="ENQUEUE",
                                                                server_default="ENQUEUE")
    # How many times a CRASHED run of this deployment is started again automatically.
    crash_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # After downtime, which missed auto-scheduled runs still run: ALL, LATEST (per schedule) or NONE.
    catchup: Mapped[str] = mapped_column(String(8), default="ALL", server_default="ALL")
    # At most this many Late auto-scheduled runs wait; older ones are cancelled (None: no cap).
    max_late_runs: Mapped[int | None] = mapped_column(Integer)


class DeploymentSchedule(TimestampMixin, Base):
    """One schedule of a deployment; ``orchestrator.schedules`` computes its times."""

    __tablename__ = "deployment_schedules"
    __table_args__ = (UniqueConstraint("deployment_id", "slug"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(128))
    # The timing: {"cron", "day_or"} | {"interval" (seconds), "anchor_date"} | {"rrule"}.
    schedule: Mapped[dict[str, Any]] = mapped_column()
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bumped by every change that replaces the runs created ahead; the scheduler writes only if
    # the version it read is still current, so a change racing a pass never leaves stale runs.
    version: Mapped[int] = mapped_column(Integer, default=0)
    # The latest time the scheduler created a run for; None: start afresh from now.
    scheduled_until: Mapped[dt.datetime | None] = mapped_column()


class FlowRun(TimestampMixin, Base):
    __tablename__ = "flow_runs"
    __table_args__ = (
        UniqueConstraint("deployment_id", "idempotency_key"),
        # The dispatcher's query: due SCHEDULED runs, oldest first; lists filtered by state.
        Index("ix_flow_runs_state_type_expected_start_time", "state_type", "expected_start_time"),
        Index("ix_flow_runs_tags", "tags", postgresql_using="gin"),
        # Lists of runs are newest first (``services/flow_runs.NEWEST_FIRST``), read by key: each
        # filter by equality has an index that continues in that order.
        Index("ix_flow_runs_expected_start_time_id", "expected_start_time", "id"),
        Index("ix_flow_runs_deployment_id_expected_start_time", "deployment_id", "expected_start_time"),
        Index("ix_flow_runs_work_pool_name_expected_start_time", "work_pool_name", "expected_start_time"),
        # ?state_name=Late: names are free text, so they do not imply a type the other index could use.
        Index("ix_flow_runs_state_name_expected_start_time", "state_name", "expected_start_time"),
        # Retention: the oldest finished runs first (end_time is set once, when the run ends).
        # Partial, as the worker index below: a new run has neither, and the scheduler writes
        # 300,000 runs in its first pass over 100,000 deployments (issue 20), each paying for
        # every index entry it adds; a query filtering on the column implies the predicate. SQLite
        # gets the same condition when the table is created there (``_partial_on_sqlite``).
        Index("ix_flow_runs_end_time_id", "end_time", "id", postgresql_where=text("end_time IS NOT NULL")),
        Index("ix_flow_runs_worker_name", "worker_name", postgresql_where=text("worker_name IS NOT NULL")),
        # A run's subflow runs, found through its task runs (migration 0018): partial, as few runs are subflows.
        Index("ix_flow_runs_parent_task_run_id", "parent_task_run_id",
              postgresql_where=text("parent_task_run_id IS NOT NULL")),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255), index=True)  # runs are addressed by name too
    # Not indexed: no query selects runs by flow, and flows are never deleted (the cascade would
    # scan); every run written would pay for an index nothing reads.
    flow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("deployments.id", ondelete="SET NULL"))
    deployment_version: Mapped[str | None] = mapped_column(String(255))
    work_pool_name: Mapped[str | None] = mapped_column(String(255))
    work_queue_name: Mapped[str | None] = mapped_column(String(255))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    state_type: Mapped[str] = mapped_column(String(16))
    state_name: Mapped[str] = mapped_column(String(64))
    state_message: Mapped[str | None] = mapped_column(Text)
    state_timestamp: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expected_start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    start_time: Mapped[dt.datetime | None] = mapped_column()
    end_time: Mapped[dt.datetime | None] = mapped_column()
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[Any | None] = mapped_column(JSONType)
    worker_name: Mapped[str | None] = mapped_column(String(255))  # indexed where set (above)
    infrastructure_id: Mapped[str | None] = mapped_column(String(255))
    dispatched_at: Mapped[dt.datetime | None] = mapped_column()
    # Last sign of life of the flow-run process itself (the worker's is on ``workers``).
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()
    # Automatic restarts after a crash so far (bounded by the deployment's ``crash_retries``).
    crash_restarts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The flow's version as the flow-run process loaded it (``@flow(version=)`` or a hash of its
    # source), reported with RUNNING: what code a run actually ran, for audit.
    flow_version: Mapped[str | None] = mapped_column(String(255))
    # A subflow run's: the task run that stands for its call in its caller's run, as in Prefect. No
    # foreign key: the caller's process sends its task runs in batches, after the child is created.
    parent_task_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


# A change of the number of runs in a final state, written by triggers on ``flow_runs``
# (``db/final_counts.py``); the sum per state is the count.
flow_run_final_counts = Table(
    "flow_run_final_counts", Base.metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("state_type", String(16), nullable=False),
    Column("delta", BigInteger, nullable=False),
)


class FlowRunState(Base):
    """History: one row per state a run entered."""

    __tablename__ = "flow_run_states"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    flow_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flow_runs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    timestamp: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Log(Base):
    __tablename__ = "logs"
    __table_args__ = (
        Index("ix_logs_flow_run_id_id", "flow_run_id", "id"),
        Index("ix_logs_timestamp_id", "timestamp", "id"),  # retention: the oldest logs first
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    flow_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("flow_runs.id", ondelete="CASCADE"))
    timestamp: Mapped[dt.datetime] = mapped_column()
    level: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)


class TaskRun(Base):
    """One call of a ``@task``, reported in batches (``orchestrator/sdk/task_runs.py``): by the
    flow-run process for a run's tasks, or by any program for a task called outside a flow
    (``flow_run_id`` None). The id is the client's, so a report is an upsert."""

    __tablename__ = "task_runs"
    __table_args__ = (
        # The API reads a run's task runs in the order they were created.
        Index("ix_task_runs_flow_run_id_created", "flow_run_id", "created"),
        # The UI's task runs page: every task run, newest first (migration 0016); filtered by task or
        # by state, along an index of that column first (migration 0017): a rare task's page reads
        # its own rows, not every newer task run's.
        Index("ix_task_runs_created_id", "created", "id"),
        Index("ix_task_runs_task_name_created_id", "task_name", "created", "id"),
        Index("ix_task_runs_state_type_created_id", "state_type", "created", "id"),
        # The reaper's look for open task runs of silent holders: only open runs outside flows
        # have an entry, so the index stays as small as what is running (migration 0017).
        Index("ix_task_runs_open_holder_id", "holder_id", postgresql_where=text(OPEN_HELD_TASK_RUNS)),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # None: a task called outside any flow (the (flow_run_id, created) index serves "IS NULL" too).
    flow_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("flow_runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    task_name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    state_type: Mapped[str] = mapped_column(String(16))
    state_name: Mapped[str] = mapped_column(String(64))
    state_message: Mapped[str | None] = mapped_column(Text)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    start_time: Mapped[dt.datetime | None] = mapped_column()
    end_time: Mapped[dt.datetime | None] = mapped_column()
    created: Mapped[dt.datetime] = mapped_column()  # when the flow created it (client clock)
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The program reporting a task run outside any flow (``task_run_holders``); None in a flow run,
    # whose lease is the flow run's own.
    holder_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


# The lease of a program running tasks outside any flow: one heartbeat for all its open task runs
# (``sdk/task_runs.py``). The reaper marks the open task runs of a silent holder CRASHED.
task_run_holders = Table(
    "task_run_holders", Base.metadata,
    Column("id", Uuid, primary_key=True),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)


class DeploymentVersion(Base):
    """Audit: one row per change of a deployment (created, updated, paused...): each changed field
    from -> to, when, and a fingerprint of the API key that made it (None on an open server)."""

    __tablename__ = "deployment_versions"
    __table_args__ = (Index("ix_deployment_versions_deployment_id_id", "deployment_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[str | None] = mapped_column(String(255))  # the deployment's version after the change
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {field: {"from": old, "to": new}}
    api_key_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Event(Base):
    """One event (``orchestrator/schemas/events.py``). ``seq`` orders events as the server stored
    them: the stream's cursor and the pages' keyset. ``id`` is the client's: a second event with
    the same id is dropped."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_occurred_seq", "occurred", "seq"),
        Index("ix_events_resource_id_occurred", "resource_id", "occurred"),
        Index("ix_events_event_occurred", "event", "occurred"),
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    occurred: Mapped[dt.datetime] = mapped_column()
    received: Mapped[dt.datetime] = mapped_column(default=utcnow)
    event: Mapped[str] = mapped_column(String(1024))
    resource_id: Mapped[str] = mapped_column(String(1024))
    resource: Mapped[dict[str, Any]] = mapped_column()
    related: Mapped[list[Any]] = mapped_column(default=list)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    follows: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class EventResource(Base):
    """One related resource of an event, so that "events related to X" is an index lookup.

    ``event_seq`` is the event's ``seq`` without a foreign key: the rows are written with their
    event, in the same statement, and deleted with it (``events.delete_older``, retention, both
    deleting these first), never otherwise. A key would check and lock the event once per row --
    five rows for each run the scheduler creates, a quarter of the database's work there."""

    __tablename__ = "event_resources"
    __table_args__ = (Index("ix_event_resources_resource_id_occurred", "resource_id", "occurred"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    resource_id: Mapped[str] = mapped_column(String(1024))
    role: Mapped[str] = mapped_column(String(255))
    occurred: Mapped[dt.datetime] = mapped_column()


class Automation(TimestampMixin, Base):
    """A trigger and the actions it runs (``schemas.automations``), as JSON. ``owner_resource``
    (``orchestrator.deployment.<id>``) marks one that follows its deployment's ``triggers``, at
    position ``owner_index`` of that list."""

    __tablename__ = "automations"
    __table_args__ = (
        Index("ix_automations_owner_resource_owner_index", "owner_resource", "owner_index"),
        Index("ix_automations_enabled", "enabled"),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    trigger: Mapped[dict[str, Any]] = mapped_column()
    actions: Mapped[list[Any]] = mapped_column(default=list)
    actions_on_trigger: Mapped[list[Any]] = mapped_column(default=list)
    actions_on_resolve: Mapped[list[Any]] = mapped_column(default=list)
    owner_resource: Mapped[str | None] = mapped_column(String(1024))
    owner_index: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """An API key (``services/api_keys.py``): its SHA-256, never the key. ``prefix`` (unique) finds
    the row for a presented key; ``run_id`` marks a flow run's own key, deleted with its run."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_created_name", "created", "name"),)  # the list's order (keyset)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    pools: Mapped[list[Any] | None] = mapped_column(JSONType)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("flow_runs.id", ondelete="CASCADE"), index=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime | None] = mapped_column()
    revoked: Mapped[dt.datetime | None] = mapped_column()
    last_used: Mapped[dt.datetime | None] = mapped_column()


# An incoming webhook: ``POST /api/hooks/<slug>`` with its secret becomes an event. Its rows' class,
# ``services.webhooks.WebhookRow``, is mapped when that module is first imported.
webhooks = Table(
    "webhooks", Base.metadata,
    Column("id", Uuid, primary_key=True, default=uuid.uuid4),
    Column("name", String(255), nullable=False, unique=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("template", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created", UTCDateTime(), nullable=False, default=utcnow),
    Column("updated", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)


@event.listens_for(FlowRun.__table__, "before_create")
@event.listens_for(TaskRun.__table__, "before_create")
def _partial_on_sqlite(table: Any, connection: Any, **_kw: Any) -> None:
    """On SQLite, the partial indexes' ``postgresql_where`` becomes their ``sqlite_where`` too, just
    before the table and its indexes are created. Not written as ``sqlite_where=`` above: SQLAlchemy
    imports its SQLite dialect (and sqlite3) to check a ``sqlite_*`` option, ~5 ms and 0.6 MB of every
    PostgreSQL server's start; on SQLite that dialect is loaded anyway."""
    if connection.dialect.name == "sqlite":
        for index in table.indexes:
            where = index.dialect_options["postgresql"]["where"]
            if where is not None:
                index.dialect_kwargs["sqlite_where"] = where
