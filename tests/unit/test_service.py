"""The Service loop every background service runs on: passes when woken, at the time asked for,
backing off after errors, never more often than ``min_gap``; stop ends the thread. Every wait is
bounded and on an event, not a sleep."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from orchestrator.server.service import Service

LONG = 300.0  # a service that says "nothing to do for 5 minutes"


class Recorder(Service):
    """Records the monotonic time of each pass; ``plan`` says what each pass returns or raises."""

    name = "recorder"

    def __init__(self, plan: Callable[[int], float]) -> None:
        super().__init__()
        self.plan = plan
        self.times: queue.Queue[float] = queue.Queue()
        self.errors: list[Exception] = []
        self.started = 0

    def step(self) -> float:
        self.started += 1
        self.times.put(time.monotonic())
        return self.plan(self.started)

    def failed(self, error: Exception) -> None:
        self.errors.append(error)

    def next_pass(self, timeout: float = 5.0) -> float:
        return self.times.get(timeout=timeout)


@pytest.fixture
def running() -> Iterator[Callable[[Callable[[int], float]], Recorder]]:
    services: list[Recorder] = []

    def make(plan: Callable[[int], float]) -> Recorder:
        service = Recorder(plan)
        services.append(service)
        service.start()
        return service

    yield make
    for service in services:
        service.stop()


def test_a_pass_at_start_then_one_per_wake(running: Callable[[Callable[[int], float]], Recorder]) -> None:
    service = running(lambda n: LONG)
    service.next_pass()
    with pytest.raises(queue.Empty):
        service.next_pass(timeout=0.2)  # asleep for LONG: no pass without a reason
    service.wake()
    service.next_pass(timeout=2)


def test_the_returned_wait_is_honoured(running: Callable[[Callable[[int], float]], Recorder]) -> None:
    service = running(lambda n: 0.3 if n == 1 else LONG)
    first = service.next_pass()
    second = service.next_pass()
    assert second - first >= 0.3


def test_wake_at_the_earliest_request_wins(running: Callable[[Callable[[int], float]], Recorder]) -> None:
    service = running(lambda n: LONG)
    service.next_pass()
    asked = time.monotonic()
    service.wake_after(60)
    service.wake_after(0.3)
    service.wake_after(30)  # later than the pending one: changes nothing
    at = service.next_pass(timeout=5)
    assert 0.3 <= at - asked < 5


def test_a_failing_pass_backs_off_and_recovers(running: Callable[[Callable[[int], float]], Recorder]) -> None:
    def plan(n: int) -> float:
        if n <= 2:
            raise RuntimeError(f"database down (pass {n})")
        return LONG

    service = running(plan)
    first, second, third = service.next_pass(), service.next_pass(), service.next_pass(timeout=10)
    assert second - first >= 1.0  # first back-off
    assert third - second >= 2.0  # doubled
    assert [str(e) for e in service.errors] == ["database down (pass 1)", "database down (pass 2)"]
    assert service.passes == 1  # only the successful one counts


def test_min_gap_coalesces_a_burst_of_wakes(running: Callable[[Callable[[int], float]], Recorder]) -> None:
    class Gapped(Recorder):
        min_gap = 0.5

    service = Gapped(lambda n: LONG)
    service.start()
    try:
        first = service.next_pass()
        for _ in range(50):
            service.wake()
        second = service.next_pass()
        assert second - first >= 0.5
        with pytest.raises(queue.Empty):
            service.next_pass(timeout=0.7)  # fifty wakes made one pass
    finally:
        service.stop()


def test_stop_ends_the_thread_even_while_asleep(running: Callable[[Callable[[int], float]], Recorder]) -> None:
    service = Recorder(lambda n: LONG)
    service.start()
    service.next_pass()
    thread = service._thread
    assert thread is not None
    began = time.monotonic()
    service.stop()
    assert not thread.is_alive() and time.monotonic() - began < 2
    assert all(t.name != "recorder" for t in threading.enumerate())
