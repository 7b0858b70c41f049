"""RRULE schedules (RFC 5545, dateutil): checking a rule and building it over wall times."""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator.schedules.specs import DEFAULT_ANCHOR, UTC, RRuleSchedule, ScheduleError, check_zone

RRULE_MAX_LENGTH = 6500  # Prefect's limit
_TZID = re.compile(r";TZID=([^:;\n]+)")
_UTC_VALUE = re.compile(r"(\d{8}T\d{6})Z")
_DTSTART = re.compile(r"^DTSTART(?:;[^:\n]*)?:(\S+)\s*$", re.MULTILINE)
_COUNT = re.compile(r"\bCOUNT\s*=\s*(\d+)", re.IGNORECASE)
MAX_COUNT = 10_000
_FIXED_FREQ = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600, "DAILY": 86400, "WEEKLY": 7 * 86400}


def parse_rrule(text: str, timezone: object, label: str) -> RRuleSchedule:
    """Refuse what we cannot evaluate faithfully; normalise every time to the zone's wall clock."""
    text = text.strip()
    if not text:
        raise ScheduleError(f"{label}: rrule must be a non-empty string")
    if len(text) > RRULE_MAX_LENGTH:
        raise ScheduleError(f"{label}: rrule is longer than {RRULE_MAX_LENGTH} characters")
    _check_count(text, label)
    zones = set(_TZID.findall(text))
    if len(zones) > 1:
        raise ScheduleError(f"{label}: rrule uses several TZIDs ({', '.join(sorted(zones))}); use one")
    if zones and timezone is not None and timezone != next(iter(zones)):
        raise ScheduleError(f"{label}: rrule TZID '{next(iter(zones))}' differs from timezone '{timezone}'")
    zone_name = check_zone(timezone or (next(iter(zones)) if zones else "UTC"), label)
    try:
        rule_set(text, zone_name, DEFAULT_ANCHOR)
        impossible = _impossible_days(text)
    except ScheduleError as error:
        raise ScheduleError(f"{label}: {error}") from None
    except (ValueError, TypeError, OverflowError) as error:
        raise ScheduleError(f"{label}: rrule '{text}' is not valid: {error}") from None
    if impossible is not None:
        raise ScheduleError(f"{label}: rrule '{impossible}' never matches a day (its day filters exclude every date)")
    return RRuleSchedule(rrule=text, timezone=zone_name)


def _check_count(text: str, label: str) -> None:
    """COUNT counts occurrences from DTSTART (RFC 5545, as dateutil and Prefect read it). Without a
    DTSTART the rule starts 2020-01-01, so "the first N" would all be past and the schedule would
    never run: refused, as are COUNT with UNTIL (RFC 5545 forbids both) and counts past the limit
    (the scheduler expands a counted rule from its DTSTART once, at this cost)."""
    counts = _COUNT.findall(text)
    if not counts:
        return
    if not _DTSTART.search(text):
        raise ScheduleError(f"{label}: rrule with COUNT needs a DTSTART line (COUNT counts occurrences from "
                            "DTSTART; without one the rule starts 2020-01-01 and all of them are past), "
                            "e.g. 'DTSTART:20300101T090000\\nRRULE:FREQ=DAILY;COUNT=3'")
    for line in re.findall(r"[^\n]*COUNT[^\n]*", text.upper()):
        if re.search(r"\bUNTIL\s*=", line):
            raise ScheduleError(f"{label}: rrule '{line.strip()}' has both COUNT and UNTIL; give one")
    for count in counts:
        if not 1 <= int(count) <= MAX_COUNT:
            raise ScheduleError(f"{label}: rrule COUNT must be between 1 and {MAX_COUNT} (got {int(count)})")


def _impossible_days(text: str) -> str | None:
    """The first rule whose day filters no date satisfies (30 February), or None.

    dateutil finds no end for such a rule: it walks day by day (or second by second) to year 9999
    every time it is asked, about 10 s each. The same filters in a YEARLY rule are checked year by
    year, a fraction of a second. Numbered weekdays (``1MO``) mean something else in a YEARLY
    rule, so those rules are left to dateutil (MONTHLY ones: at most a couple of seconds)."""
    from dateutil.rrule import rrulestr

    for line in re.findall(r"[^\n]*FREQ[^\n]*", text.upper()):
        fields = dict(part.split("=", 1) for part in line.split(":")[-1].split(";") if "=" in part)
        if fields.get("FREQ") == "YEARLY" or re.search(r"\d", fields.get("BYDAY", "")):
            continue
        days = {k: v for k, v in fields.items() if k in ("BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYDAY")}
        if days:
            probe = "FREQ=YEARLY;" + ";".join(f"{k}={v}" for k, v in days.items())
            if next(iter(rrulestr(probe, dtstart=DEFAULT_ANCHOR)), None) is None:
                return line.strip()
    return None


def rule_set(text: str, zone_name: str, near: dt.datetime) -> tuple[Any, int | None]:
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
    text = _counted_to_until(text, start)
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


def _counted_to_until(text: str, start: dt.datetime) -> str:
    """Each rule line's ``COUNT=n`` replaced by ``UNTIL=`` its n-th occurrence from ``start``: the
    same set of times, but one that, like any other, may be evaluated from a DTSTART moved forward
    (the count would restart there). The expansion is cached: once per rule and process."""
    def until(match: re.Match[str]) -> str:
        line = match.group(0)
        prefix, _, body = line.rpartition(":")
        last = _last_occurrence(body.strip(), start)
        body = _COUNT.sub(f"UNTIL={last.strftime('%Y%m%dT%H%M%S')}", body)
        return f"{prefix}:{body}" if prefix else body
    return re.sub(r"[^\n]*\bCOUNT\s*=[^\n]*", until, text, flags=re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def _last_occurrence(rule: str, start: dt.datetime) -> dt.datetime:
    from dateutil.rrule import rrulestr

    last = start
    for last in rrulestr(rule, dtstart=start, ignoretz=True):  # noqa: B007 - the last one is wanted
        pass
    return last


def _rrule_time(value: str) -> dt.datetime:
    for fmt in ("%Y%m%dT%H%M%S", "%Y%m%d"):
        try:
            return dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ScheduleError(f"DTSTART '{value}' is not a date-time like 20250101T090000")


# --- times -------------------------------------------------------------------------------------
