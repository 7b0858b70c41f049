"""The scheduler's horizon: which of a schedule's times should have runs now. Pure."""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.schedules import Spec, iter_times

if TYPE_CHECKING:
    from orchestrator.settings import Settings


@dataclass(frozen=True)
class Horizon:
    min_runs: int = 3
    min_time: dt.timedelta = dt.timedelta(hours=1)
    max_runs: int = 100
    max_time: dt.timedelta = dt.timedelta(days=100)

    @classmethod
    def from_settings(cls, settings: Settings) -> Horizon:
        return cls(settings.scheduler_min_runs, dt.timedelta(seconds=settings.scheduler_min_horizon_seconds),
                   settings.scheduler_max_runs, dt.timedelta(seconds=settings.scheduler_max_horizon_seconds))


def plan_times(spec: Spec, now: dt.datetime, horizon: Horizon) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The times to have runs for, from ``now``: until both minimums are met, within both maximums.
    Also returns the first time left out (None if the schedule ends)."""
    wanted: list[dt.datetime] = []
    for when in iter_times(spec, now):
        full = len(wanted) >= horizon.min_runs and when > now + horizon.min_time
        if full or len(wanted) >= horizon.max_runs or when > now + horizon.max_time:
            return wanted, when
        wanted.append(when)
    return wanted, None


def last_times(spec: Spec, after: dt.datetime, before: dt.datetime, count: int) -> list[dt.datetime]:
    """The latest ``count`` times in ``(after, before)``, looking back in growing windows so a
    long downtime of a frequent schedule is not walked minute by minute."""
    window = dt.timedelta(hours=1)
    while True:
        start = max(after + dt.timedelta(microseconds=1), before - window)
        found: collections.deque[dt.datetime] = collections.deque(maxlen=count)
        for when in iter_times(spec, start):
            if when >= before:
                break
            found.append(when)
        if len(found) >= count or start <= after + dt.timedelta(microseconds=1):
            return list(found)
        window *= 8
