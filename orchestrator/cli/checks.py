"""Values the API would refuse, refused by the CLI first, while it parses its line: a usage error
(one line, exit 2, naming the option and what it accepts; ``help_format.py``), as the option
parser's own range errors (``--port 70000``) -- not exit 1 after a request, or after the command
built its request. Kept free of pydantic: the parser runs these before any command loads it; and of
typer until a value is refused, so that ``cli/main.py``'s own reading of ``server start`` and
``worker start`` (which loads no typer) shares the bounds (``MAX_RUNS_AT_ONCE``, ``max_processes``)."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from typing import NoReturn

# The API's largest count (``schemas.base.INT32_MAX``: a column of 32 bits), repeated here so that
# checking a number needs no schema module.
INT32_MAX = 2**31 - 1
API_KEY_LIFETIME_DAYS = 36500  # ``schemas.api_keys.ApiKeyCreate.expires_in``: at most 100 years
# ``worker start --limit`` / ``dev --limit``: each run at once holds a thread of the worker (and a
# process, container or pod); past ten thousand, a typo is likelier than a plan -- start more workers.
MAX_RUNS_AT_ONCE = 10_000
# ``server start --processes``: API processes per CPU this process may use. Each is a whole server
# (its services, its connections); gunicorn's advice is 2 per core + 1, so 4 leaves room and stops
# a typo (``--processes 100``) from forking a hundred servers onto a laptop.
PROCESSES_PER_CPU = 4
# ``deployment run --start-in``: 30, 30s, 5 min, 2h, 1 day (no sign: a delay is not negative).
DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?)?\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def refuse(message: str) -> NoReturn:
    """The option's value is refused: the parser's usage error, which names the option."""
    import typer

    raise typer.BadParameter(message)


def finite(value: float | None) -> float | None:
    """A number of seconds must be one: ``inf`` passes the option's minimum (``nan`` does not), and
    so does a wait longer than a socket's or a lock's timeout can be (``threading.TIMEOUT_MAX``, ~292
    years): ``worker check --timeout 1e10`` ended in an ``OverflowError``'s traceback."""
    if value is not None and not math.isfinite(value):
        refuse(f"{value} is not a finite number of seconds")
    import threading

    if value is not None and value > threading.TIMEOUT_MAX:
        refuse(f"{value:g} s is longer than this machine can wait; give at most "
               f"{threading.TIMEOUT_MAX:.0f} s")
    return value


def max_processes() -> int:
    """The most API processes ``server start`` takes: ``PROCESSES_PER_CPU`` per CPU it may run on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return PROCESSES_PER_CPU * (cpus or 1)


def processes(value: int | None) -> int | None:
    """``--processes``: 1 (the option's minimum) to ``max_processes()``."""
    if value is not None and value > (most := max_processes()):
        refuse(f"{value} is more than {PROCESSES_PER_CPU} per CPU of this machine; give 1 to "
               f"{most} (more would only compete for the CPUs)")
    return value


def delay(text: str) -> dt.timedelta:
    """``--start-in``'s duration; refused (a usage error naming the forms) when it is not one, or
    when a run that far ahead would start after the last date Python holds (year 9999)."""
    allowed = "a duration of 0 or more like 30s, 5m, 2h or 1d"
    match = DELAY.match(text)
    if not match:
        refuse(f"{text!r} is not {allowed}")
    try:
        amount = dt.timedelta(seconds=float(match.group(1)) * UNIT_SECONDS[(match.group(2) or "s")[0]])
        _ = dt.datetime.now(dt.UTC) + amount  # only whether that date exists
    except OverflowError:
        refuse(f"{text!r} is too large: the run would start after the year 9999")
    return amount


def start_in(text: str | None) -> str | None:
    """``--start-in``, checked as it is parsed (``delay``); the command reads it again to send it."""
    if text is not None:
        delay(text)
    return text


def instant(text: str) -> dt.datetime:
    """A time option's value (``--start-at``, ``--start``, ``--end``): ISO 8601; naive is local time."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        refuse(f"{text!r} is not an ISO 8601 time like 2026-01-31T09:00:00+00:00")
    return when if when.tzinfo else when.astimezone()


def iso_time(text: str | None) -> str | None:
    """A time option, checked as it is parsed (``instant``)."""
    if text is not None:
        instant(text)
    return text


def interval_value(text: str) -> float | str:
    """Seconds, 30s / 5m / 2h / 1d, or an ISO 8601 duration (which the schedule reads itself)."""
    try:
        return float(text)
    except ValueError:
        pass
    match = SHORT_INTERVAL.match(text)
    if match:
        return float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    return text


SHORT_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


def interval(text: str | None) -> str | None:
    """``--interval`` (``deployment schedule create``, ``deploy``): what a schedule accepts, at least
    1 s (``orchestrator.schedules.parse_interval``, the schedule's own rule)."""
    if text is None:
        return None
    from orchestrator.schedules import parse_interval

    try:
        parse_interval(interval_value(text))
    except ValueError as error:
        said = str(error) if repr(text) in str(error) or "(got" in str(error) else f"{error} (got {text!r})"
        if "at least" not in said:  # the range, when the schedule's own words do not give it
            said += "; give at least 1 s: seconds, 5m / 2h / 1d, or ISO 8601 (PT15M)"
        refuse(said)
    return text


# ``db prune --older-than``: at most a century, as an API key's lifetime; further back than that is a
# typo (and ``99999999d`` would reach before year 1, a date Python cannot hold).
MAX_AGE_DAYS = 36500


def age(text: str) -> dt.timedelta:
    """``--older-than``: more than 0 and at most ``MAX_AGE_DAYS``, as the retention settings read it
    (``30d``, ``12h``, ``3600`` seconds, or ISO 8601 ``P30D``)."""
    from pydantic import TypeAdapter, ValidationError

    from orchestrator.settings import short_duration

    allowed = f"give more than 0 s and at most {MAX_AGE_DAYS} days, e.g. 30d, 12h, 3600 (seconds) or P30D"
    try:
        parsed = TypeAdapter(dt.timedelta).validate_python(short_duration(text))
    except (ValidationError, OverflowError):
        refuse(f"{text!r} is not a duration; {allowed}")
    if not dt.timedelta(0) < parsed <= dt.timedelta(days=MAX_AGE_DAYS):
        refuse(f"{text!r} is out of range; {allowed}")
    return parsed


def older_than(text: str | None) -> str | None:
    """``--older-than``, checked as it is parsed (``age``)."""
    if text is not None:
        age(text)
    return text


def api_key_lifetime(text: str | None) -> str | None:
    """``--expires-in``: a duration the API takes (more than 0, at most 36500 days); checked as the
    API reads it (seconds, 30d / 12h, or ISO 8601), then sent as written."""
    if text is None:
        return None
    import datetime as dt

    import pydantic

    from orchestrator.schemas.api_keys import Duration

    allowed = f"more than 0 s and at most {API_KEY_LIFETIME_DAYS} days, e.g. 30d, 12h, 3600 (seconds)"
    try:
        lifetime = pydantic.TypeAdapter(Duration).validate_python(text)
    except pydantic.ValidationError:
        refuse(f"{text!r} is not a duration; give {allowed}")
    if not dt.timedelta(0) < lifetime <= dt.timedelta(days=API_KEY_LIFETIME_DAYS):
        refuse(f"{text!r} is out of range; give {allowed}")
    return text


# State names that refine a type (as in Prefect); ``flow-run ls --state`` takes these as well as the types.
REFINED_STATE_NAMES = ("Late", "AwaitingRetry", "AwaitingRestart", "AwaitingConcurrencySlot")


def states(values: list[str]) -> list[str]:
    """``--state``: each a type in any case (scheduled, FAILED) or a state name in any case, with or
    without separators (Late, late, awaiting-retry); given back as the API spells it (the type's
    upper-case name, or the state's name)."""
    from orchestrator.states import DEFAULT_NAMES, StateType

    names = {n.lower(): n for n in (*DEFAULT_NAMES.values(), *REFINED_STATE_NAMES)}
    spelled = []
    for text in values:
        key = text.strip().replace("-", "").replace("_", "").replace(" ", "").lower()
        if key.upper() in StateType.__members__:
            spelled.append(key.upper())
        elif key in names:
            spelled.append(names[key])
        else:
            refuse(f"unknown state {text!r}; a type ({', '.join(t.value for t in StateType)}) or a name "
                   f"({', '.join(REFINED_STATE_NAMES)})")
    return spelled
