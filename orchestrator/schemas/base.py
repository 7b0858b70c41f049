"""What every wire model shares: the base classes of input and output models, name patterns, and
the bounds of what the database can hold (numbers by column width, instants in UTC, storable text)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from orchestrator import storable

NAME_PATTERN = r"^[^/%&><]+$"
CollisionStrategy = Literal["ENQUEUE", "CANCEL_NEW"]
CatchupPolicy = Literal["ALL", "LATEST", "NONE"]
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class OutModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# The largest numbers the database's columns hold: a larger one is a 422 naming the field, not a
# database error. INTEGER columns (limits, priorities, log levels) have 32 bits on PostgreSQL.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1  # offsets and log ids


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Instants are stored in UTC. A naive one is read as UTC, as Prefect's API reads it; one with no
    UTC equivalent (year 1 at +05:00) is refused here instead of overflowing in the database layer."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "date-time out of range once converted to UTC") from None


Instant = Annotated[dt.datetime, AfterValidator(_as_utc)]


class InModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        why = storable.problem(value)
        if why is not None:
            raise PydanticCustomError("unstorable", why)
        return value
