"""Schedule specs and their times. Pure: no database, no I/O.

Three kinds, each with an IANA time zone (default UTC):

- ``CronSchedule``: a cron expression (croniter), ``day_or`` as in croniter/Prefect (when both the
  day-of-month and the day-of-week fields are restricted, run on either (True) or only on days
  matching both (False)).
- ``IntervalSchedule``: a fixed interval (seconds, or an ISO 8601 duration such as ``PT15M``) counted
  from ``anchor_date`` (default 2020-01-01 00:00 in the schedule's zone), in both directions.
- ``RRuleSchedule``: an RFC 5545 recurrence rule (dateutil). ``COUNT=N`` is the first N times from
  ``DTSTART`` (which it then requires), evaluated as the same rule ending ``UNTIL`` its N-th time.

Daylight saving time -- the rule users expect from cron:

- cron, rrule and intervals of 24 h or more follow the wall clock of the zone: "every day at 02:30"
  stays at 02:30 local time across a change. A wall time that does not exist (the hour skipped in
  spring) moves forward by the gap (02:30 -> 03:30); a wall time that happens twice (autumn) runs
  once, at its first occurrence -- except for sub-daily schedules (a cron whose hour field is a
  wildcard, an rrule of FREQ=HOURLY/MINUTELY/SECONDLY), which run at both, so "every 15 minutes"
  keeps running every 15 real minutes through the repeated hour.
- intervals under 24 h follow UTC: "every hour" is every 3600 real seconds, whatever the clocks do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator.schedules import cron
from orchestrator.schedules.cron import parse_cron
from orchestrator.schedules.rrule import RRULE_MAX_LENGTH, parse_rrule, rule_set
from orchestrator.schedules.specs import (
    DAY,
    DEFAULT_ANCHOR,
    KINDS,
    MIN_INTERVAL,
    UTC,
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
    ScheduleError,
    Spec,
    check_zone,
)

__all__ = [
    "DEFAULT_ANCHOR", "RRULE_MAX_LENGTH", "CronSchedule", "IntervalSchedule", "RRuleSchedule", "ScheduleError", "Spec",
    "default_slug", "describe", "iter_times", "localize", "next_times", "parse", "parse_interval", "to_storage",
]
# More than any DST shift anywhere (at most 2 h): near a change, iteration starts this much earlier.
_FOLD_MARGIN = dt.timedelta(hours=3)

# --- parsing -----------------------------------------------------------------------------------


def parse(data: Mapping[str, Any], *, name: str | None = None) -> Spec:
    """A spec from wire/storage fields: exactly one of ``cron`` / ``interval`` / ``rrule``, plus
    ``timezone``, ``day_or`` (cron) and ``anchor_date`` (interval). Raises ``ScheduleError``."""
    kinds = [k for k in KINDS if data.get(k) is not None]
    label = _label(name, data, kinds)
    if len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        raise ScheduleError(f"{label}: give exactly one of cron, interval or rrule (got {found})")
    kind = kinds[0]
    if kind != "cron" and data.get("day_or") not in (None, True):
        raise ScheduleError(f"{label}: day_or only applies to cron schedules")
    if kind != "interval" and data.get("anchor_date") is not None:
        raise ScheduleError(f"{label}: anchor_date only applies to interval schedules")
    timezone = data.get("timezone")
    if kind == "rrule":
        return parse_rrule(str(data["rrule"]), timezone, label)
    zone_name = check_zone(timezone or "UTC", label)
    if kind == "cron":
        return parse_cron(data["cron"], zone_name, data.get("day_or", True), label)
    return _parse_interval(data["interval"], data.get("anchor_date"), zone_name, label)


def to_storage(spec: Spec) -> dict[str, Any]:
    """The canonical JSON of a spec's timing (without the zone, stored in its own column)."""
    if isinstance(spec, CronSchedule):
        return {"cron": spec.cron, "day_or": spec.day_or}
    if isinstance(spec, IntervalSchedule):
        return {"interval": spec.interval.total_seconds(), "anchor_date": spec.anchor_date.isoformat()}
    return {"rrule": spec.rrule}


def default_slug(spec: Spec) -> str:
    """A stable slug from the timing and zone: re-deploying the same schedule finds the same row."""
    canonical = json.dumps({**to_storage(spec), "timezone": spec.timezone}, sort_keys=True)
    kind = next(k for k in KINDS if k in to_storage(spec))
    return f"{kind}-{hashlib.sha1(canonical.encode()).hexdigest()[:8]}"


def describe(spec: Spec) -> str:
    """One line for people: ``cron '0 9 * * *' (Europe/Berlin)``."""
    if isinstance(spec, CronSchedule):
        extra = "" if spec.day_or else ", day_or=false"
        return f"cron '{spec.cron}' ({spec.timezone}{extra})"
    if isinstance(spec, IntervalSchedule):
        return f"every {_human(spec.interval)} from {spec.anchor_date.isoformat()} ({spec.timezone})"
    return f"rrule '{spec.rrule}' ({spec.timezone})"


def _label(name: str | None, data: Mapping[str, Any], kinds: list[str]) -> str:
    if name:
        return f"schedule '{name}'"
    if len(kinds) == 1:
        return f"schedule ({kinds[0]} {data[kinds[0]]!r})"
    return "schedule"


_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_interval(value: object) -> dt.timedelta:
    """Seconds (a number or numeric text), a ``timedelta`` or an ISO 8601 duration (``PT15M``,
    ``P1D``, ``P1W``). Raises ``ValueError`` with the reason."""
    if isinstance(value, dt.timedelta):
        interval = value
    elif isinstance(value, bool):
        raise ValueError("interval must be a number of seconds or an ISO 8601 duration, not a boolean")  # noqa: TRY004
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("interval must be a finite number of seconds")
        try:
            interval = dt.timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"interval {value:g} s is too large") from None
    elif isinstance(value, str):
        text = value.strip().upper()
        try:
            interval = dt.timedelta(seconds=float(text))
        except ValueError:
            match = _ISO_DURATION.match(text)
            if re.match(r"^P(\d+(\.\d+)?[YM])", text):
                raise ValueError(f"'{value}': months and years have no fixed length; use a cron or rrule "
                                 "schedule") from None
            if not match or text in ("P", "PT") or text.endswith("T"):
                raise ValueError(f"'{value}' is neither a number of seconds nor an ISO 8601 duration "
                                 "such as PT15M, PT1H or P1D") from None
            parts = {k: float(v) for k, v in match.groupdict().items() if v}
            interval = dt.timedelta(weeks=parts.get("w", 0), days=parts.get("d", 0), hours=parts.get("h", 0),
                                    minutes=parts.get("m", 0), seconds=parts.get("s", 0))
        except OverflowError:
            raise ValueError(f"interval '{value}' is too large") from None
    else:
        raise ValueError("interval must be a number of seconds or an ISO 8601 duration")  # noqa: TRY004 - user input
    if interval < MIN_INTERVAL:
        raise ValueError(f"interval must be at least 1 second (got {interval.total_seconds():g} s)")
    return interval


def _parse_interval(value: object, anchor: object, zone: str, label: str) -> IntervalSchedule:
    try:
        interval = parse_interval(value)
    except (ValueError, OverflowError) as error:
        raise ScheduleError(f"{label}: {error}") from None
    tz = ZoneInfo(zone)
    if anchor is None:
        anchor_dt = DEFAULT_ANCHOR.replace(tzinfo=tz)
    else:
        if isinstance(anchor, str):
            try:
                anchor = dt.datetime.fromisoformat(anchor)
            except ValueError:
                raise ScheduleError(f"{label}: anchor_date '{anchor}' is not an ISO 8601 date-time") from None
        if not isinstance(anchor, dt.datetime):
            raise ScheduleError(f"{label}: anchor_date must be an ISO 8601 date-time")
        anchor_dt = anchor.replace(tzinfo=tz) if anchor.tzinfo is None else anchor  # naive: the zone's time
    try:
        anchor_dt.astimezone(UTC)  # the runs are computed in UTC too
        anchor_dt = anchor_dt.astimezone(tz)
    except OverflowError:
        raise ScheduleError(f"{label}: anchor_date {anchor_dt.isoformat()} is out of range in UTC or {zone}") from None
    return IntervalSchedule(interval=interval, anchor_date=anchor_dt, timezone=zone)


def next_times(spec: Spec, start: dt.datetime, end: dt.datetime | None = None, n: int | None = None) -> list[dt.datetime]:
    """The schedule's times ``t`` with ``start <= t`` (and ``t <= end``), at most ``n``, in order,
    as aware datetimes in the schedule's zone. Give ``end`` or ``n`` (or both)."""
    if end is None and n is None:
        raise ValueError("next_times needs an end or a count")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    zone = ZoneInfo(spec.timezone)
    times: list[dt.datetime] = []
    if n is not None and n <= 0:
        return times
    for t in iter_times(spec, start):
        if end is not None and t > end:
            break
        times.append(t.astimezone(zone))
        if n is not None and len(times) >= n:
            break
    return times


def iter_times(spec: Spec, start: dt.datetime) -> Iterator[dt.datetime]:
    """Every time from ``start`` on, as aware UTC datetimes (endless unless the schedule ends)."""
    start = start.astimezone(UTC)
    if isinstance(spec, IntervalSchedule) and spec.interval < DAY:
        yield from _utc_steps(spec, start)
        return
    zone = ZoneInfo(spec.timezone)
    wall_start = _wall_start(start, zone)
    if isinstance(spec, CronSchedule):
        walls, both = cron.walls(spec, wall_start), cron.sub_daily(spec.cron)
    elif isinstance(spec, IntervalSchedule):
        walls, both = _interval_walls(spec, zone, wall_start), False
    else:
        rules, min_unit = rule_set(spec.rrule, spec.timezone, wall_start)
        walls, both = rules.xafter(wall_start, count=None, inc=True), bool(min_unit and min_unit <= 3600)
    yield from _localize_all(walls, zone, both, start)


def _utc_steps(spec: IntervalSchedule, start: dt.datetime) -> Iterator[dt.datetime]:
    anchor = spec.anchor_date.astimezone(UTC)
    step_us = spec.interval // dt.timedelta(microseconds=1)
    k = -(-((start - anchor) // dt.timedelta(microseconds=1)) // step_us)  # ceil
    while True:
        try:
            yield anchor + dt.timedelta(microseconds=k * step_us)
        except OverflowError:
            return
        k += 1


def _interval_walls(spec: IntervalSchedule, zone: ZoneInfo, wall_start: dt.datetime) -> Iterator[dt.datetime]:
    anchor = spec.anchor_date.astimezone(zone).replace(tzinfo=None)
    k = (wall_start - anchor) // spec.interval
    while True:
        try:
            yield anchor + spec.interval * k
        except OverflowError:
            return
        k += 1


def _localize_all(walls: Iterator[dt.datetime], zone: ZoneInfo, both_folds: bool,
                  start: dt.datetime) -> Iterator[dt.datetime]:
    """Wall times (increasing) to instants (increasing). Instants of ordinary wall times (and the
    first occurrence of a repeated one) increase with the wall time; only a second occurrence or a
    time moved out of the spring gap can come out ahead, so those wait in a heap until an ordinary
    instant passes them."""
    pending: list[dt.datetime] = []
    last: dt.datetime | None = None
    for wall in walls:
        instants = localize(wall, zone, both_folds)
        ordinary = instants[0] if _is_ordinary(wall, zone) else None
        for instant in instants:
            heapq.heappush(pending, instant)
        while pending and (ordinary is not None and pending[0] <= ordinary):
            instant = heapq.heappop(pending)
            if instant >= start and (last is None or instant > last):
                last = instant
                yield instant
    while pending:
        instant = heapq.heappop(pending)
        if instant >= start and (last is None or instant > last):
            last = instant
            yield instant


def _is_ordinary(wall: dt.datetime, zone: ZoneInfo) -> bool:
    """Not in a spring gap (its first occurrence is itself)."""
    first = wall.replace(tzinfo=zone, fold=0)
    return first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def _wall_start(start: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """Where to begin the wall-clock iteration: at ``start``'s wall time, or a few hours earlier
    when a DST change is near (a second occurrence of an earlier wall time may still be ahead)."""
    wall = start.astimezone(zone).replace(tzinfo=None)
    offsets = {(start + d).astimezone(zone).utcoffset() for d in (-_FOLD_MARGIN, dt.timedelta(0), _FOLD_MARGIN)}
    return wall if len(offsets) == 1 else wall - _FOLD_MARGIN


def localize(wall: dt.datetime, zone: ZoneInfo, both_folds: bool = False) -> list[dt.datetime]:
    """The UTC instants of a wall time: a skipped one moves forward by the gap, a repeated one is
    its first occurrence (or both, for sub-daily schedules)."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return [first.astimezone(UTC)]  # in the gap: fold=0 uses the offset before it, i.e. later
    return [first.astimezone(UTC), second.astimezone(UTC)] if both_folds else [first.astimezone(UTC)]


def _human(interval: dt.timedelta) -> str:
    seconds = interval.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
