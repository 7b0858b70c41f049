"""A deployment's schedules and backfills on the wire."""

import datetime as dt
import uuid
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from orchestrator.schemas.base import DEFERRED, SLUG_PATTERN, InModel, OutModel, new_dict

TIMING_FIELDS = ("cron", "day_or", "interval", "anchor_date", "rrule")


class ScheduleCreate(InModel):
    """One schedule: exactly one of ``cron``, ``interval`` or ``rrule`` (``orchestrator.schedules``)."""

    cron: str | None = Field(None, description="Cron expression, e.g. '0 9 * * 1-5'.")
    day_or: bool | None = Field(None, description="Cron: day-of-month OR day-of-week (default) vs AND.")
    interval: float | str | None = Field(None, description="Seconds, or an ISO 8601 duration such as PT15M.")
    anchor_date: dt.datetime | None = Field(None, description="Interval: counted from here (naive: the zone's time).")
    rrule: str | None = Field(None, max_length=6500, description="RFC 5545 recurrence rule (no COUNT).")
    timezone: str | None = Field(None, description="IANA zone; default UTC (or the rrule's TZID).")
    active: bool = True
    parameters: dict[str, Any] = Field(default_factory=new_dict, description="Override the deployment's parameters.")
    slug: str | None = Field(None, min_length=1, max_length=128, pattern=SLUG_PATTERN,
                             description="Unique within the deployment; default derived from the timing.")

    @model_validator(mode="before")
    @classmethod
    def _other_shapes(cls, data: Any) -> Any:
        """Also accept a schedule read back from the API (``orch deploy`` keeps the server's) and
        Prefect's nested ``{"schedule": {...}, "active": ...}``; a ``timedelta`` interval is seconds."""
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            return data
        data = dict(data)
        nested = data.pop("schedule", None)
        if isinstance(nested, dict):
            data = {**nested, **data}
        for key in ("id", "deployment_id", "created", "updated"):
            data.pop(key, None)
        if isinstance(data.get("interval"), dt.timedelta):
            data["interval"] = data["interval"].total_seconds()
        return {k: v for k, v in data.items() if not (k in TIMING_FIELDS and v is None)}

    @model_validator(mode="after")
    def _valid(self) -> "ScheduleCreate":
        from orchestrator.schedules import parse

        parse(self.model_dump(include={*TIMING_FIELDS, "timezone"}, exclude_none=True), name=self.slug)
        return self


class ScheduleUpdate(InModel):
    """Pause/resume (``active``), new parameters, or new timing (replaces the old kind)."""

    active: bool | None = None
    parameters: dict[str, Any] | None = None
    cron: str | None = None
    day_or: bool | None = None
    interval: float | str | None = None
    anchor_date: dt.datetime | None = None
    rrule: str | None = Field(None, max_length=6500)
    timezone: str | None = None


class DeploymentSchedule(OutModel):
    id: uuid.UUID
    deployment_id: uuid.UUID
    slug: str
    cron: str | None = None
    day_or: bool | None = None
    interval: float | None = Field(None, description="Seconds.")
    anchor_date: dt.datetime | None = None
    rrule: str | None = None
    timezone: str
    active: bool
    parameters: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime


class BackfillRequest(InModel):
    start: AwareDatetime
    end: AwareDatetime
    schedules: list[str] | None = Field(None, description="Slugs; default every active schedule.")


class BackfillResult(BaseModel):
    model_config = DEFERRED  # built at its first use (``schemas/base.py``)

    created: int
    existing: int
