"""RRULE COUNT: the first N occurrences from DTSTART, as RFC 5545, dateutil and Prefect read it."""

from __future__ import annotations

import datetime as dt

import pytest
from dateutil.rrule import rrulestr

from orchestrator.schedules import ScheduleError, next_times, parse
from orchestrator.schedules.horizon import Horizon, last_times, plan_times

UTC = dt.UTC
START = dt.datetime(2030, 1, 1, 9, tzinfo=UTC)


def test_count_yields_the_first_n_occurrences_from_dtstart_and_no_more() -> None:
    spec = parse({"rrule": "DTSTART:20300101T090000\nRRULE:FREQ=HOURLY;COUNT=5"})
    every = next_times(spec, START - dt.timedelta(days=400), n=100)
    assert [t.hour for t in every] == [9, 10, 11, 12, 13]
    # Asked from later on (the scheduler moves DTSTART near "now"), the count does not restart.
    assert [t.hour for t in next_times(spec, START + dt.timedelta(hours=2, minutes=30), n=100)] == [12, 13]
    assert next_times(spec, START + dt.timedelta(days=3), n=100) == []


def test_a_frequent_counted_rule_far_from_dtstart_still_ends_at_its_count() -> None:
    spec = parse({"rrule": "DTSTART:20300101T000000\nRRULE:FREQ=MINUTELY;COUNT=10000"})
    last = dt.datetime(2030, 1, 1, tzinfo=UTC) + dt.timedelta(minutes=9999)
    assert next_times(spec, last - dt.timedelta(minutes=1), n=10) == [last - dt.timedelta(minutes=1), last]


def test_count_agrees_with_dateutil_with_exdates_zones_and_two_rules() -> None:
    text = ("DTSTART;TZID=Europe/Berlin:20300325T020000\nRRULE:FREQ=DAILY;COUNT=4\n"
            "RRULE:FREQ=WEEKLY;BYDAY=SU;BYHOUR=12;COUNT=2\nEXDATE;TZID=Europe/Berlin:20300326T020000")
    spec = parse({"rrule": text})
    got = [t.strftime("%m-%d %H:%M") for t in next_times(spec, START, n=100)]
    # 31 March 2030 02:00 does not exist in Berlin (spring gap): moved forward to 03:00, as documented.
    assert got == ["03-25 02:00", "03-27 02:00", "03-28 02:00", "03-31 12:00", "04-07 12:00"]
    reference = rrulestr(text.replace(";TZID=Europe/Berlin", ""), forceset=True)
    assert len(list(reference)) == 5


def test_the_horizon_plans_at_most_count_runs_over_every_pass() -> None:
    spec = parse({"rrule": "DTSTART:20300101T090000\nRRULE:FREQ=MINUTELY;INTERVAL=10;COUNT=7"})
    horizon = Horizon(min_runs=3, min_time=dt.timedelta(minutes=15), max_runs=100)
    planned: set[dt.datetime] = set()
    for minutes in range(-60, 200, 5):
        wanted, _ = plan_times(spec, START + dt.timedelta(minutes=minutes), horizon)
        planned.update(wanted)
    assert len(planned) == 7
    # Catch-up after a downtime finds only the counted times too.
    assert len(last_times(spec, START - dt.timedelta(days=1), START + dt.timedelta(days=1), 100)) == 7


@pytest.mark.parametrize(("rrule", "reason"), [
    ("FREQ=DAILY;COUNT=3", "rrule with COUNT needs a DTSTART line"),
    ("DTSTART:20300101T090000\nRRULE:FREQ=DAILY;COUNT=0", "COUNT must be between 1 and 10000 (got 0)"),
    ("DTSTART:20300101T090000\nRRULE:FREQ=DAILY;COUNT=10001", "COUNT must be between 1 and 10000 (got 10001)"),
    ("DTSTART:20300101T090000\nRRULE:FREQ=DAILY;COUNT=3;UNTIL=20310101T000000", "has both COUNT and UNTIL"),
])
def test_counts_that_cannot_mean_what_they_say_are_refused(rrule: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as error:
        parse({"rrule": rrule}, name="few")
    assert str(error.value).startswith("schedule 'few': ") and reason in str(error.value)
