"""The trigger evaluator's tables (``orchestrator/server/triggers``): its cursor over the events, the
open windows of event triggers, compound triggers' child firings, held events and outgoing calls.
``models.py`` imports them, so they are part of the one schema the migrations create."""

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator.server.db.base import Base
from orchestrator.server.db.types import JSONType, utcnow


class TriggerCursor(Base):
    """Which events the trigger evaluator has handled: every seq at or below ``floor``, and the
    seqs in ``handled`` above it; ``missing`` holds the gaps between them with the time (epoch
    seconds) they were first seen missing (``triggers/cursor.py``). One row; its lock makes one
    evaluator at a time on PostgreSQL."""

    __tablename__ = "trigger_cursors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    floor: Mapped[int] = mapped_column(BigInteger)
    handled: Mapped[list[Any]] = mapped_column(default=list)
    missing: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AutomationBucket(Base):
    """The open window of one event trigger for one ``for_each`` key: its count so far."""

    __tablename__ = "automation_buckets"
    __table_args__ = (Index("ix_automation_buckets_window_end", "window_end"),)
    automation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"),
                                                     primary_key=True)
    trigger_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    bucket_key: Mapped[str] = mapped_column(String(2048), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column()
    window_end: Mapped[dt.datetime] = mapped_column()
    count: Mapped[int] = mapped_column(Integer)
    last_event: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AutomationChildFiring(Base):
    """The latest firing of one trigger inside a compound or sequence trigger."""

    __tablename__ = "automation_child_firings"
    automation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"),
                                                     primary_key=True)
    parent_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    child_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    firing_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    fired_at: Mapped[dt.datetime] = mapped_column()
    event: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class AutomationHeldEvent(Base):
    """An event evaluated only once the event it ``follows`` has been (or a bounded wait passed)."""

    __tablename__ = "automation_held_events"
    event_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    follows: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    held_at: Mapped[dt.datetime] = mapped_column()


class AutomationCall(Base):
    """An outgoing webhook call of a firing, made after the firing commits (at most once)."""

    __tablename__ = "automation_calls"
    __table_args__ = (UniqueConstraint("firing_id", "action_index"), Index("ix_automation_calls_state", "state"))
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    firing_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    action_index: Mapped[int] = mapped_column(Integer)
    automation_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    state: Mapped[str] = mapped_column(String(16))  # pending, calling, done, failed
    request: Mapped[dict[str, Any]] = mapped_column()
    context: Mapped[dict[str, Any]] = mapped_column()
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
