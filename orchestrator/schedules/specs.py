"""Schedule specs: the three kinds, each with an IANA time zone, and their one error type."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
DAY = dt.timedelta(days=1)
DEFAULT_ANCHOR = dt.datetime(2020, 1, 1)  # naive: midnight in the schedule's own zone
MIN_INTERVAL = dt.timedelta(seconds=1)


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message names the schedule and the reason."""


@dataclass(frozen=True)
class CronSchedule:
    cron: str
    timezone: str = "UTC"
    day_or: bool = True


@dataclass(frozen=True)
class IntervalSchedule:
    interval: dt.timedelta
    anchor_date: dt.datetime  # aware
    timezone: str = "UTC"


@dataclass(frozen=True)
class RRuleSchedule:
    rrule: str
    timezone: str = "UTC"


Spec = CronSchedule | IntervalSchedule | RRuleSchedule
KINDS = ("cron", "interval", "rrule")


def check_zone(name: object, label: str) -> str:
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"{label}: timezone must be an IANA zone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{label}: unknown time zone '{name}' (expected an IANA name such as "
                            "'Europe/Berlin' or 'UTC')") from None
    return name
