"""What every wire model shares: the base classes of input and output models, name patterns, and
the bounds of what the database can hold (numbers by column width, instants in UTC, storable text)."""

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from orchestrator import storable

NAME_PATTERN = r"^[^/%&><]+$"
NAME_MAX_LENGTH = 255
CollisionStrategy = Literal["ENQUEUE", "CANCEL_NEW"]
CatchupPolicy = Literal["ALL", "LATEST", "NONE"]
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# For a validator built at its first use (a module-level TypeAdapter no request may need), and for
# an answer's model that a server which only runs flows never answers with (a page of runs, a run's
# waiting reason): not built when its class is made (~0.3-2 ms of a server's start each), but by its
# first use, and never at all by a server never asked for it. Never a route's body's model: FastAPI
# builds a body's adapter under its filter of pydantic's warnings about Body() aliases, and a deferred
# one would be built outside it (a warning at the first request). Nor a model an eager one holds
# (``FlowRun`` in ``Claim``): the holder's build would make the held one's schema anyway.
DEFERRED = ConfigDict(defer_build=True)


def new_list() -> list[Any]:
    """``default_factory`` of an empty list. pydantic reads each factory's signature (does it take
    the validated data?); ``list``'s, a builtin's, is parsed from its text each time (~0.15 ms) and
    leaves a cycle holding a copy of ``sys.modules``, which a server's start freezes for good
    (``cli/serve.py``: ~0.7 MB for the models and routes a server loads). A plain function's is read
    at once and leaves nothing."""
    return []


def new_dict() -> dict[str, Any]:
    """``default_factory`` of an empty dict (``new_list`` says why not ``dict``)."""
    return {}


class OutModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# The largest numbers the database's columns hold: a larger one is a 422 naming the field, not a
# database error. INTEGER columns (limits, priorities, log levels) have 32 bits on PostgreSQL.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1  # offsets and log ids


def as_utc(value: dt.datetime) -> dt.datetime:
    """Instants are stored in UTC. A naive one is read as UTC, as Prefect's API reads it; one with no
    UTC equivalent (year 1 at +05:00) is refused here instead of overflowing in the database layer."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "date-time out of range once converted to UTC") from None


Instant = Annotated[dt.datetime, AfterValidator(as_utc)]


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a work pool, work queue, flow or deployment (None when it can).

    The one rule for names, applied by the input models (the API's 422, the client before it
    sends) and by the client before it puts a name in a URL path: a name travels in paths
    (``/work_pools/{name}``) and broker queue names (``orch/pool/<pool>/<queue>``), where ``/``
    would make another path and ``%`` another escape."""
    if not value:
        return "cannot be empty"
    if len(value) > NAME_MAX_LENGTH:
        return f"is {len(value)} characters long, the most is {NAME_MAX_LENGTH}"
    bad = sorted({c for c in value if c in "/%&><"})
    if bad:
        return f"cannot contain {' '.join(bad)} (names may not contain / % & > <)"
    return None


def _check_name(value: str) -> str:
    why = name_problem(value)
    if why is not None:
        raise PydanticCustomError("name", why)
    return value


# The JSON schema keeps the constraints' usual keywords; the check gives the one-line reasons above.
Name = Annotated[str, AfterValidator(_check_name), Field(json_schema_extra={
    "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": NAME_PATTERN})]


class InModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        why = storable.problem(value)
        if why is not None:
            raise PydanticCustomError("unstorable", why)
        return value
