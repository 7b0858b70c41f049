"""Schedule specs and their times. Pure: no database, no I/O.

Three kinds, each with an IANA time zone (default UTC):

- ``CronSchedule``: a cron expression (croniter), ``day_or`` as in croniter/Prefect (when both the
  day-of-month and the day-of-week fields are restricted, run on either (True) or only on days
  matching both (False)).
- ``IntervalSchedule``: a fixed interval (seconds, or an ISO 8601 duration such as ``PT15M``) counted
  from ``anchor_date`` (default 2020-01-01 00:00 in the schedule's zone), in both directions.
- ``RRuleSchedule``: an RFC 5545 recurrence rule (dateutil). ``COUNT`` is refused, as in Prefect:
  the scheduler evaluates a rule from many starting points, so "the first N" has no stable meaning;
  use ``UNTIL`` (or create N runs directly).

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
import functools
import hashlib
import heapq
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
DAY = dt.timedelta(days=1)
DEFAULT_ANCHOR = dt.datetime(2020, 1, 1)  # naive: midnight in the schedule's own zone
RRULE_MAX_LENGTH = 6500  # Prefect's limit
MIN_INTERVAL = dt.timedelta(seconds=1)
# More than any DST shift anywhere (at most 2 h): near a change, iteration starts this much earlier.
_FOLD_MARGIN = dt.timedelta(hours=3)


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
        return _parse_rrule(str(data["rrule"]), timezone, label)
    zone_name = _check_zone(timezone or "UTC", label)
    if kind == "cron":
        return _parse_cron(data["cron"], zone_name, data.get("day_or", True), label)
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


def _check_zone(name: object, label: str) -> str:
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"{label}: timezone must be an IANA zone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{label}: unknown time zone '{name}' (expected an IANA name such as "
                            "'Europe/Berlin' or 'UTC')") from None
    return name


def _parse_cron(expression: object, zone: str, day_or: object, label: str) -> CronSchedule:
    from croniter import croniter

    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError(f"{label}: cron must be a non-empty string")
    if not isinstance(day_or, bool):
        raise ScheduleError(f"{label}: day_or must be true or false")
    expression = " ".join(expression.split())
    problem = _cron_problem(expression, day_or)
    if problem is not None:
        raise ScheduleError(f"{label}: cron expression '{expression}' is not valid: {problem}")
    return CronSchedule(cron=expression, timezone=zone, day_or=day_or)


@functools.lru_cache(maxsize=4096)
def _cron_problem(expression: str, day_or: bool) -> str | None:
    """Why croniter refuses an expression (None: fine). Cached: the scheduler re-reads thousands
    of stored schedules, mostly with a handful of distinct expressions."""
    from croniter import croniter

    try:
        croniter(expression, DEFAULT_ANCHOR, day_or=day_or).get_next(dt.datetime)
    except Exception as error:  # noqa: BLE001 - croniter raises several unrelated types for bad input
        return str(error)
    return None


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
        interval = dt.timedelta(seconds=value)
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
    return IntervalSchedule(interval=interval, anchor_date=anchor_dt.astimezone(tz), timezone=zone)


_TZID = re.compile(r";TZID=([^:;\n]+)")
_UTC_VALUE = re.compile(r"(\d{8}T\d{6})Z")
_DTSTART = re.compile(r"^DTSTART(?:;[^:\n]*)?:(\S+)\s*$", re.MULTILINE)
_FIXED_FREQ = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600, "DAILY": 86400, "WEEKLY": 7 * 86400}


def _parse_rrule(text: str, timezone: object, label: str) -> RRuleSchedule:
    """Refuse what we cannot evaluate faithfully; normalise every time to the zone's wall clock."""
    text = text.strip()
    if not text:
        raise ScheduleError(f"{label}: rrule must be a non-empty string")
    if len(text) > RRULE_MAX_LENGTH:
        raise ScheduleError(f"{label}: rrule is longer than {RRULE_MAX_LENGTH} characters")
    if re.search(r"\bCOUNT\s*=", text, re.IGNORECASE):
        raise ScheduleError(f"{label}: rrule with COUNT is not supported (as in Prefect); use UNTIL, or "
                            "create that many runs directly")
    zones = set(_TZID.findall(text))
    if len(zones) > 1:
        raise ScheduleError(f"{label}: rrule uses several TZIDs ({', '.join(sorted(zones))}); use one")
    if zones and timezone is not None and timezone != next(iter(zones)):
        raise ScheduleError(f"{label}: rrule TZID '{next(iter(zones))}' differs from timezone '{timezone}'")
    zone_name = _check_zone(timezone or (next(iter(zones)) if zones else "UTC"), label)
    try:
        _rule_set(text, zone_name, DEFAULT_ANCHOR)
    except ScheduleError as error:
        raise ScheduleError(f"{label}: {error}") from None
    except (ValueError, TypeError, OverflowError) as error:
        raise ScheduleError(f"{label}: rrule '{text}' is not valid: {error}") from None
    return RRuleSchedule(rrule=text, timezone=zone_name)


def _rule_set(text: str, zone_name: str, near: dt.datetime) -> tuple[Any, int | None]:
    """The dateutil rule set over naive wall times of the zone, with DTSTART moved forward by whole
    periods to just before ``near`` (a MINUTELY rule from 2020 would otherwise iterate millions of
    times), and the smallest period in seconds (None for MONTHLY/YEARLY rules)."""
    from dateutil.rrule import rrulestr

    zone = ZoneInfo(zone_name)
    text = _TZID.sub("", text)
    # Values in UTC ("...Z") become the zone's wall time; values without Z already are.
    text = _UTC_VALUE.sub(
        lambda m: dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        .astimezone(zone).strftime("%Y%m%dT%H%M%S"), text)
    start = DEFAULT_ANCHOR
    found = _DTSTART.findall(text)
    if len(found) > 1:
        raise ScheduleError("rrule has more than one DTSTART")
    if found:
        start = _rrule_time(found[0])
        text = _DTSTART.sub("", text).strip()
    freqs = re.findall(r"\bFREQ\s*=\s*([A-Z]+)", text.upper())
    if not freqs:
        raise ScheduleError(f"rrule '{text}' has no FREQ")
    periods = []
    for rule in re.findall(r"[^\n]*FREQ[^\n]*", text.upper()):
        freq = re.search(r"FREQ\s*=\s*([A-Z]+)", rule)
        step = re.search(r"INTERVAL\s*=\s*(\d+)", rule)
        unit = _FIXED_FREQ.get(freq.group(1)) if freq else None
        periods.append(None if unit is None else unit * int(step.group(1) if step else 1))
    period = None if None in periods else math.lcm(*periods)  # type: ignore[arg-type]
    if period and near - start > dt.timedelta(seconds=period):
        start += dt.timedelta(seconds=period) * ((near - start) // dt.timedelta(seconds=period) - 1)
    rules = rrulestr(text, dtstart=start, forceset=True, ignoretz=True)
    min_unit = min(_FIXED_FREQ.get(f, 86400 * 28) for f in freqs)
    return rules, min_unit


def _rrule_time(value: str) -> dt.datetime:
    for fmt in ("%Y%m%dT%H%M%S", "%Y%m%d"):
        try:
            return dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ScheduleError(f"DTSTART '{value}' is not a date-time like 20250101T090000")


# --- times -------------------------------------------------------------------------------------


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
        walls, both = _cron_walls(spec, wall_start), _cron_sub_daily(spec.cron)
    elif isinstance(spec, IntervalSchedule):
        walls, both = _interval_walls(spec, zone, wall_start), False
    else:
        rules, min_unit = _rule_set(spec.rrule, spec.timezone, wall_start)
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


def _cron_sub_daily(expression: str) -> bool:
    """Hour field a wildcard (``*``, ``*/2``) or a sub-daily alias: runs at both repeated hours."""
    fields = expression.split()
    if len(fields) == 1:
        return fields[0].lower() in ("@hourly", "@minutely")
    return fields[1].startswith("*")


@functools.lru_cache(maxsize=4096)
def _cron_fields(expression: str, day_or: bool) -> tuple[Any, ...] | None:
    """croniter's expansion of a plain 5-field expression (None for L, #, seconds or years, which
    only croniter itself evaluates)."""
    from croniter import croniter

    expanded = croniter(expression, DEFAULT_ANCHOR, day_or=day_or)
    if len(expanded.expanded) != 5 or expanded.nth_weekday_of_month:
        return None
    if any(isinstance(v, str) and v != "*" for values in expanded.expanded for v in values):
        return None
    fields = [None if values == ["*"] else frozenset(int(v) for v in values) for values in expanded.expanded]
    minutes = tuple(sorted(fields[0] if fields[0] is not None else range(60)))
    hours = tuple(sorted(fields[1] if fields[1] is not None else range(24)))
    return minutes, hours, fields[2], fields[3], fields[4], day_or


def _fast_cron_walls(fields: tuple[Any, ...], wall_start: dt.datetime) -> Iterator[dt.datetime]:
    """Day by day over the expanded fields: the same times as croniter, an order of magnitude
    cheaper (10,000 cron schedules are planned in every scheduler pass)."""
    minutes, hours, days, months, weekdays, day_or = fields
    day, idle = wall_start.date(), 0
    while idle < 146097:  # no matching day in a whole 400-year Gregorian cycle: it never fires again
        idle += 1
        if (months is None or day.month in months) and _day_matches(day, days, weekdays, day_or):
            idle = 0
            for hour in hours:
                for minute in minutes:
                    wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                    if wall >= wall_start:
                        yield wall
        if day == dt.date.max:
            return
        day += dt.timedelta(days=1)


def _day_matches(day: dt.date, days: frozenset[int] | None, weekdays: frozenset[int] | None, day_or: bool) -> bool:
    in_month = days is None or day.day in days
    in_week = weekdays is None or (day.weekday() + 1) % 7 in weekdays  # cron: 0 = Sunday
    if days is not None and weekdays is not None and day_or:
        return in_month or in_week
    return in_month and in_week


def _cron_walls(spec: CronSchedule, wall_start: dt.datetime) -> Iterator[dt.datetime]:
    from croniter import croniter

    fields = _cron_fields(spec.cron, spec.day_or)
    if fields is not None:
        yield from _fast_cron_walls(fields, wall_start)
        return

    # croniter yields times strictly after its start; ours is inclusive.
    iterator = croniter(spec.cron, wall_start - dt.timedelta(seconds=1), day_or=spec.day_or)
    while True:
        try:
            yield iterator.get_next(dt.datetime)
        except Exception:  # noqa: BLE001 - CroniterBadDateError and kin: no further date ("0 0 30 2 *")
            return


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
