"""Schedule specs and their times: cron, interval, rrule; DST in a real zone; bad expressions."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from zoneinfo import ZoneInfo

import pydantic
import pytest
from dateutil.rrule import rrulestr

from orchestrator import schemas
from orchestrator.schedules import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    default_slug,
    next_times,
    parse,
    parse_interval,
)
from orchestrator.schedules.horizon import Horizon, last_times, plan_times

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
# 2025 in Europe/Berlin: clocks jump 02:00 -> 03:00 on 30 March, fall back 03:00 -> 02:00 on 26 October.
SPRING = dt.datetime(2025, 3, 29, 12, tzinfo=BERLIN)
AUTUMN = dt.datetime(2025, 10, 25, 12, tzinfo=BERLIN)


def gaps(times: list[dt.datetime]) -> list[dt.timedelta]:
    """Real time between consecutive times (same-zone subtraction in Python is wall-clock)."""
    instants = [t.astimezone(UTC) for t in times]
    return [b - a for a, b in itertools.pairwise(instants)]


def utc(times: list[dt.datetime]) -> list[str]:
    return [t.astimezone(UTC).strftime("%m-%d %H:%M") for t in times]


def local(times: list[dt.datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M%z") for t in times]


# --- plain times -------------------------------------------------------------------------------


def test_cron_times_start_inclusive_and_bounded_by_end_and_count() -> None:
    spec = parse({"cron": "*/15 * * * *"})
    start = dt.datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    assert utc(next_times(spec, start, n=3)) == ["01-01 10:00", "01-01 10:15", "01-01 10:30"]
    assert utc(next_times(spec, start, end=start + dt.timedelta(minutes=30))) == [
        "01-01 10:00", "01-01 10:15", "01-01 10:30"]
    assert next_times(spec, start, n=0) == []
    with pytest.raises(ValueError, match="end or a count"):
        next_times(spec, start)


def test_cron_day_or() -> None:
    # The 1st of the month and Mondays: either (default) or both at once.
    start = dt.datetime(2025, 9, 1, tzinfo=UTC)  # a Monday, the 1st
    either = parse({"cron": "0 0 1 * MON"})
    both = parse({"cron": "0 0 1 * MON", "day_or": False})
    assert utc(next_times(either, start, n=3)) == ["09-01 00:00", "09-08 00:00", "09-15 00:00"]
    assert utc(next_times(both, start, n=2)) == ["09-01 00:00", "12-01 00:00"]  # Mondays that are the 1st


def test_cron_in_a_zone_follows_local_time() -> None:
    spec = parse({"cron": "0 9 * * *", "timezone": "America/New_York"})
    times = next_times(spec, dt.datetime(2025, 1, 1, tzinfo=UTC), n=2)
    assert local(times) == ["01-01 09:00-0500", "01-02 09:00-0500"]
    assert times[0].tzinfo == ZoneInfo("America/New_York")


def test_interval_counts_from_the_anchor_in_both_directions() -> None:
    spec = parse({"interval": 600, "anchor_date": "2025-01-01T00:07:00+00:00"})
    start = dt.datetime(2024, 12, 31, 23, 50, tzinfo=UTC)
    assert utc(next_times(spec, start, n=3)) == ["12-31 23:57", "01-01 00:07", "01-01 00:17"]
    default = parse({"interval": "PT1H"})  # default anchor: 2020-01-01 00:00 in the zone
    assert utc(next_times(default, dt.datetime(2025, 1, 1, 0, 30, tzinfo=UTC), n=1)) == ["01-01 01:00"]


@pytest.mark.parametrize(("text", "seconds"), [
    (60, 60), (1.5, 1.5), ("90", 90), ("PT15M", 900), ("PT1H30M", 5400), ("P1D", 86400), ("P1W", 604800),
    ("P1DT12H", 129600), ("pt10s", 10), (dt.timedelta(minutes=2), 120),
])
def test_interval_forms(text: object, seconds: float) -> None:
    assert parse_interval(text).total_seconds() == seconds


@pytest.mark.parametrize("value", [1e18, "1e18", 10**30])
def test_an_interval_too_large_for_a_timedelta_is_refused_in_words(value: object) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_interval(value)


def test_rrule_times_and_a_tzid() -> None:
    spec = parse({"rrule": "DTSTART;TZID=Europe/Berlin:20250101T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO,FR"})
    assert spec.timezone == "Europe/Berlin"
    times = next_times(spec, dt.datetime(2025, 1, 6, tzinfo=UTC), n=3)
    assert local(times) == ["01-06 09:00+0100", "01-10 09:00+0100", "01-13 09:00+0100"]


def test_rrule_until_in_utc_and_exdate() -> None:
    spec = parse({"rrule": "DTSTART:20250101T090000\nRRULE:FREQ=DAILY;UNTIL=20250104T080000Z\n"
                           "EXDATE:20250102T090000", "timezone": "Europe/Berlin"})
    # UNTIL 08:00Z is 09:00 in Berlin: the 4th is still in; the 2nd is excluded.
    assert local(next_times(spec, dt.datetime(2025, 1, 1, tzinfo=UTC), n=10)) == [
        "01-01 09:00+0100", "01-03 09:00+0100", "01-04 09:00+0100"]


def test_frequent_rrule_from_an_old_dtstart_is_exact() -> None:
    """DTSTART is moved forward by whole periods (a MINUTELY rule from 2020 would take dateutil
    seconds); the times must be the ones dateutil gives from the original DTSTART."""
    rule = "DTSTART:20200101T000000\nRRULE:FREQ=MINUTELY;INTERVAL=7;BYSECOND=30"
    start = dt.datetime(2020, 1, 3, 5, 0, tzinfo=UTC)
    expected = list(rrulestr(rule).xafter(start.replace(tzinfo=None), count=20, inc=True))
    got = next_times(parse({"rrule": rule}), start, n=20)
    assert [t.replace(tzinfo=None) for t in got] == expected
    far = next_times(parse({"rrule": rule}), dt.datetime(2031, 6, 1, tzinfo=UTC), n=2)
    assert far[1] - far[0] == dt.timedelta(minutes=7)


# --- DST, both transitions, in Europe/Berlin ---------------------------------------------------


def test_daily_cron_keeps_the_wall_clock_across_both_changes() -> None:
    spec = parse({"cron": "30 9 * * *", "timezone": "Europe/Berlin"})
    assert local(next_times(spec, SPRING, n=3)) == ["03-30 09:30+0200", "03-31 09:30+0200", "04-01 09:30+0200"]
    assert utc(next_times(spec, SPRING - dt.timedelta(days=1), n=3)) == ["03-29 08:30", "03-30 07:30", "03-31 07:30"]
    assert local(next_times(spec, AUTUMN, n=2)) == ["10-26 09:30+0100", "10-27 09:30+0100"]


def test_cron_in_the_skipped_hour_moves_forward_by_the_gap() -> None:
    spec = parse({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    assert local(next_times(spec, SPRING, n=3)) == ["03-30 03:30+0200", "03-31 02:30+0200", "04-01 02:30+0200"]


def test_cron_in_the_repeated_hour_runs_once() -> None:
    spec = parse({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    assert local(next_times(spec, AUTUMN, n=3)) == ["10-26 02:30+0200", "10-27 02:30+0100", "10-28 02:30+0100"]


def test_sub_daily_cron_keeps_real_time_through_both_changes() -> None:
    spec = parse({"cron": "0 * * * *", "timezone": "Europe/Berlin"})
    spring = next_times(spec, dt.datetime(2025, 3, 30, 0, 30, tzinfo=BERLIN), n=4)
    assert local(spring) == ["03-30 01:00+0100", "03-30 03:00+0200", "03-30 04:00+0200", "03-30 05:00+0200"]
    autumn = next_times(spec, dt.datetime(2025, 10, 26, 0, 30, tzinfo=BERLIN), n=5)
    assert local(autumn) == ["10-26 01:00+0200", "10-26 02:00+0200", "10-26 02:00+0100", "10-26 03:00+0100",
                             "10-26 04:00+0100"]
    assert gaps(autumn) == [dt.timedelta(hours=1)] * 4


def test_starting_inside_the_repeated_hour_still_finds_its_second_occurrence() -> None:
    spec = parse({"cron": "*/30 * * * *", "timezone": "Europe/Berlin"})
    start = dt.datetime(2025, 10, 26, 0, 40, tzinfo=UTC)  # 02:40 CEST, the first 02:40
    assert utc(next_times(spec, start, n=4)) == ["10-26 01:00", "10-26 01:30", "10-26 02:00", "10-26 02:30"]


def test_intervals_under_a_day_follow_utc() -> None:
    spec = parse({"interval": 3600, "timezone": "Europe/Berlin"})
    spring = next_times(spec, dt.datetime(2025, 3, 30, 0, 30, tzinfo=BERLIN), n=3)
    assert local(spring) == ["03-30 01:00+0100", "03-30 03:00+0200", "03-30 04:00+0200"]
    autumn = next_times(spec, dt.datetime(2025, 10, 26, 1, 30, tzinfo=BERLIN), n=3)
    assert local(autumn) == ["10-26 02:00+0200", "10-26 02:00+0100", "10-26 03:00+0100"]
    assert gaps(spring) == gaps(autumn) == [dt.timedelta(hours=1)] * 2


def test_intervals_of_a_day_or_more_keep_the_local_hour() -> None:
    spec = parse({"interval": "P1D", "timezone": "Europe/Berlin", "anchor_date": "2025-01-01T09:00:00"})
    spring = next_times(spec, SPRING, n=3)
    assert local(spring) == ["03-30 09:00+0200", "03-31 09:00+0200", "04-01 09:00+0200"]
    assert gaps([next_times(spec, SPRING - dt.timedelta(days=1), n=1)[0], spring[0]]) == [dt.timedelta(hours=23)]
    autumn = next_times(spec, AUTUMN - dt.timedelta(days=1), n=3)
    assert local(autumn) == ["10-25 09:00+0200", "10-26 09:00+0100", "10-27 09:00+0100"]
    assert gaps(autumn) == [dt.timedelta(hours=25), dt.timedelta(hours=24)]
    weekly = parse({"interval": "P1W", "timezone": "Europe/Berlin", "anchor_date": "2025-03-23T02:30:00"})
    assert local(next_times(weekly, SPRING, n=2)) == ["03-30 03:30+0200", "04-06 02:30+0200"]


def test_daily_rrule_keeps_the_wall_clock() -> None:
    spec = parse({"rrule": "FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "timezone": "Europe/Berlin"})
    assert local(next_times(spec, SPRING, n=2)) == ["03-30 03:30+0200", "03-31 02:30+0200"]
    assert local(next_times(spec, AUTUMN, n=2)) == ["10-26 02:30+0200", "10-27 02:30+0100"]


# --- bad expressions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    ({"cron": "61 * * * *"}, "cron expression '61 * * * *' is not valid"),
    ({"cron": "every day"}, "is not valid"),
    ({"cron": ""}, "cron must be a non-empty string"),
    ({"interval": 0}, "at least 1 second"),
    ({"interval": -5}, "at least 1 second"),
    ({"interval": "P1M"}, "months and years have no fixed length"),
    ({"interval": "soon"}, "neither a number of seconds nor an ISO 8601 duration"),
    ({"interval": float("inf")}, "finite"),
    ({"interval": True}, "not a boolean"),
    ({"interval": 60, "anchor_date": "yesterday"}, "anchor_date 'yesterday' is not an ISO 8601"),
    ({"rrule": "FREQ=DAILY;COUNT=3"}, "rrule with COUNT needs a DTSTART line"),
    ({"rrule": "FREQ=SOMETIMES"}, "invalid 'FREQ'"),
    ({"rrule": "BYHOUR=9"}, "has no FREQ"),
    ({"rrule": "FREQ=DAILY;BYHOUR=25"}, "hour must be in 0..23"),
    ({"rrule": "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30"}, "never matches a day"),
    ({"rrule": "RRULE:FREQ=DAILY\nEXRULE:FREQ=MINUTELY;BYMONTH=4;BYMONTHDAY=31"}, "never matches a day"),
    ({"rrule": "FREQ=HOURLY;INTERVAL=2;BYHOUR=1"}, "generates an empty set"),
    ({"rrule": "DTSTART;TZID=Europe/Paris:20250101T000000\nRRULE:FREQ=DAILY", "timezone": "UTC"},
     "differs from timezone"),
    ({"rrule": "FREQ=DAILY;" + "BYHOUR=1;" * 1000}, "longer than 6500"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"cron": "* * * * *", "interval": 5}, "exactly one of cron, interval or rrule (got cron, interval)"),
    ({}, "exactly one of cron, interval or rrule (got none)"),
    ({"interval": 60, "day_or": False}, "day_or only applies to cron"),
    ({"cron": "* * * * *", "anchor_date": "2025-01-01"}, "anchor_date only applies to interval"),
])
def test_bad_schedules_are_refused_naming_the_schedule_and_the_reason(data: dict[str, object], reason: str) -> None:
    with pytest.raises(ScheduleError) as error:
        parse(data, name="nightly")
    assert str(error.value).startswith("schedule 'nightly': ")
    assert reason in str(error.value)


def test_an_unnamed_schedule_is_named_by_its_expression() -> None:
    with pytest.raises(ScheduleError, match=r"schedule \(cron '61 \* \* \* \*'\): cron expression"):
        parse({"cron": "61 * * * *"})


def test_the_wire_model_refuses_bad_schedules_in_a_deployment() -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p",
                                 schedules=[{"cron": "0 9 * * *"}, {"rrule": "FREQ=DAILY;COUNT=2", "slug": "twice"}])
    [problem] = error.value.errors()
    assert problem["loc"] == ("schedules", 1)
    assert "schedule 'twice': rrule with COUNT needs a DTSTART" in problem["msg"]


def test_the_wire_model_accepts_what_flow_deploy_sends_and_prefect_shapes() -> None:
    plain = [{"cron": "0 9 * * *"}, {"interval": 60}, {"rrule": "FREQ=HOURLY"},
             {"interval": dt.timedelta(hours=1), "timezone": "Europe/Berlin", "active": False, "slug": "hourly"},
             {"schedule": {"cron": "0 0 * * *", "timezone": "UTC"}, "active": True, "parameters": {"x": 1}}]
    created = [schemas.ScheduleCreate.model_validate(item) for item in plain]
    assert created[3].interval == 3600 and created[3].active is False
    assert created[4].cron == "0 0 * * *" and created[4].parameters == {"x": 1}
    # A schedule read back from the API goes back in unchanged (``orch deploy`` keeps the server's).
    out = schemas.DeploymentSchedule(id="00000000-0000-0000-0000-000000000001",
                                     deployment_id="00000000-0000-0000-0000-000000000002", slug="s", interval=60.0,
                                     anchor_date=dt.datetime(2020, 1, 1, tzinfo=UTC), timezone="UTC", active=True,
                                     parameters={}, created=dt.datetime.now(UTC), updated=dt.datetime.now(UTC))
    again = schemas.ScheduleCreate.model_validate(out)
    assert (again.interval, again.slug, again.cron) == (60.0, "s", None)


def test_default_slugs_are_stable_and_tell_the_kind() -> None:
    a, b = parse({"cron": "0 9 * * *"}), parse({"cron": "0  9 * * *"})
    assert default_slug(a) == default_slug(b) and default_slug(a).startswith("cron-")
    assert default_slug(a) != default_slug(parse({"cron": "0 9 * * *", "timezone": "Europe/Berlin"}))


# --- the scheduler's horizon (pure) ------------------------------------------------------------


NOW = dt.datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(("interval", "count"), [
    (3600, 3),  # at least 3 runs (3 h ahead)
    (60, 60),  # at least 1 hour (60 runs)
    (86400, 3),
    (1, 100),  # at most 100 runs
])
def test_horizon_runs_ahead(interval: int, count: int) -> None:
    wanted, left_out = plan_times(parse({"interval": interval}), NOW, Horizon())
    assert len(wanted) == count
    assert left_out is not None and left_out > wanted[-1]


def test_horizon_is_bounded_in_time() -> None:
    yearly = parse({"cron": "0 0 1 1 *"})
    wanted, left_out = plan_times(yearly, NOW, Horizon(max_time=dt.timedelta(days=100)))
    assert wanted == [] and left_out == dt.datetime(2026, 1, 1, tzinfo=UTC)
    ended = parse({"rrule": "DTSTART:20250601T000000\nRRULE:FREQ=HOURLY;UNTIL=20250601T140000"})
    assert utc(plan_times(ended, NOW, Horizon())[0]) == ["06-01 13:00", "06-01 14:00"]
    assert plan_times(ended, NOW, Horizon())[1] is None


def test_last_times_looks_back_without_walking_everything() -> None:
    spec = parse({"interval": 60})
    after = NOW - dt.timedelta(days=90)
    assert utc(last_times(spec, after, NOW, 2)) == ["06-01 11:59", "06-01 12:00"]
    assert len(last_times(spec, NOW - dt.timedelta(minutes=5), NOW, 100)) == 5


def test_spec_types() -> None:
    assert isinstance(parse({"cron": "* * * * *"}), CronSchedule)
    assert isinstance(parse({"interval": 5}), IntervalSchedule)
    with pytest.raises(ScheduleError):
        parse({"rrule": "DTSTART:2025\nRRULE:FREQ=DAILY"})


def test_the_fast_cron_path_gives_exactly_croniters_times() -> None:
    """Plain 5-field expressions are evaluated from croniter's expansion day by day (10,000 cron
    schedules are planned in one pass); croniter itself is the reference."""
    from croniter import croniter

    from orchestrator.schedules.cron import _cron_fields, _fast_cron_walls

    rng = random.Random(7)
    expressions = ["30 2 29 2 *", "0 0 1 * MON", "@hourly", "0 0 31 * *", "59 23 * 12 0,6"]
    for _ in range(300):
        expressions.append(" ".join([
            rng.choice(["*", str(rng.randint(0, 59)), f"*/{rng.randint(2, 30)}", f"{rng.randint(0, 20)}-{rng.randint(21, 59)}"]),
            rng.choice(["*", str(rng.randint(0, 23)), f"*/{rng.randint(2, 12)}", "9-17"]),
            rng.choice(["*", str(rng.randint(1, 31)), "1,15", "*/5", "29-31"]),
            rng.choice(["*", str(rng.randint(1, 12)), "*/3", "1-6", "2"]),
            rng.choice(["*", str(rng.randint(0, 6)), "1-5", "0,6", "7", "MON"]),
        ]))
    for expression in expressions:
        for day_or in (True, False):
            start = dt.datetime(2024, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59))
            reference = croniter(expression, start - dt.timedelta(seconds=1), day_or=day_or)
            expected = [reference.get_next(dt.datetime) for _ in range(25)]
            fields = _cron_fields(expression, day_or)
            assert fields is not None, expression
            assert list(itertools.islice(_fast_cron_walls(fields, start), 25)) == expected, (expression, day_or)
    for special in ("0 0 L * *", "0 0 * * 5#2", "5 4 * * * 30"):
        assert _cron_fields(special, True) is None  # evaluated by croniter itself
        assert next_times(parse({"cron": special}), dt.datetime(2025, 1, 1, tzinfo=UTC), n=2)
