"""``LateBeats``: a heartbeat not recorded within a period is told as refused, and again each period it
is still not done; one done in time never is. A loop of our own whose clock the test moves: the
timers it is given run when their time comes, as an event loop's would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.server.api.context import LateBeats


class Timer:
    """What ``LateBeats`` uses of an ``asyncio.TimerHandle``."""

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when, self.callback, self.cancelled = when, callback, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """What ``LateBeats`` uses of an event loop (``time``, ``call_at``), its time moved by ``advance``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(when, lambda: callback(*args))
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Runs, in their order, the timers due by ``now + seconds`` (also those they arm)."""
        until = self.now + seconds
        while due := [timer for timer in self.timers if timer.when() <= until and not timer.cancelled]:
            timer = min(due, key=Timer.when)
            self.timers.remove(timer)
            self.now = timer.when()
            timer.callback()
        self.now = until


def late_beats(period: float = 10.0) -> tuple[LateBeats, list[float], Clock]:
    clock = Clock()
    told: list[float] = []
    return LateBeats(period, lambda: told.append(clock.now)), told, clock


def test_a_beat_still_not_done_is_told_each_period_until_it_is() -> None:
    beats, told, clock = late_beats()
    beat = beats.begin(clock)  # type: ignore[arg-type]
    clock.advance(9.9)
    assert told == []
    clock.advance(25.0)  # to 134.9
    assert told == [110.0, 120.0, 130.0]
    beats.end(beat)
    clock.advance(100.0)
    assert told == [110.0, 120.0, 130.0]


def test_beats_done_in_time_are_never_told_and_leave_no_timer_armed() -> None:
    beats, told, clock = late_beats()
    for _ in range(5):
        beat = beats.begin(clock)  # type: ignore[arg-type]
        clock.advance(3.0)
        beats.end(beat)
    clock.advance(100.0)
    assert told == []
    assert not [timer for timer in clock.timers if not timer.cancelled]


def test_each_late_beat_is_told_at_its_own_deadlines() -> None:
    beats, told, clock = late_beats()
    first = beats.begin(clock)  # type: ignore[arg-type]
    clock.advance(4.0)
    second = beats.begin(clock)  # type: ignore[arg-type]  # late from 114
    clock.advance(2.0)
    quick = beats.begin(clock)  # type: ignore[arg-type]
    clock.advance(1.0)
    beats.end(quick)
    clock.advance(18.0)  # to 125
    assert told == [110.0, 114.0, 120.0, 124.0]
    beats.end(first)
    clock.advance(10.0)  # to 135
    assert told == [110.0, 114.0, 120.0, 124.0, 134.0]
    beats.end(second)
    clock.advance(50.0)
    assert len(told) == 5


def test_a_beat_on_another_loop_is_told_though_a_timer_was_left_on_the_first() -> None:
    first_loop, second_loop = Clock(), Clock()
    told: list[float] = []
    beats = LateBeats(10.0, lambda: told.append(second_loop.now))
    beats.end(beats.begin(first_loop))  # type: ignore[arg-type]  # its timer stays armed there
    beats.begin(second_loop)  # type: ignore[arg-type]
    second_loop.advance(10.0)
    assert told == [110.0]
