"""bench/compare.py takes each system's runs, batches and cancels alone (``compare.measures.Turns``):
the other systems' processes are stopped during a turn and resumed after it, and each system's time
spent stopped since its last turn is counted across phases (a long stop earns a longer settle)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.usefixtures("isolated_imports")


class Sleeper:
    """The part of a compare side that ``Turns`` uses: a label and its processes' pids."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    def processes(self) -> list[int]:
        return [self.proc.pid]

    def stopped(self) -> bool:
        """The process's state (/proc/PID/stat) is T: stopped by a signal."""
        return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def measures(monkeypatch: pytest.MonkeyPatch) -> Any:
    sys.path.insert(0, str(BENCH))
    from compare import measures

    monkeypatch.setattr(measures, "SETTLE", 0.0)
    monkeypatch.setattr(measures, "LONG_SETTLE", 0.0)
    return measures


@pytest.fixture
def sides() -> Iterator[list[Sleeper]]:
    made = [Sleeper(label) for label in ("a", "b", "c")]
    yield made
    for side in made:
        side.proc.kill()
        side.proc.wait(timeout=10)


def test_a_turn_stops_the_other_sides_and_resumes_them(measures: Any, sides: list[Sleeper]) -> None:
    a, _, c = sides
    turns = measures.Turns(sides)
    with turns.of(a):
        assert [side.stopped() for side in sides] == [False, True, True]
    assert [side.stopped() for side in sides] == [False, False, False]
    with turns.of(c):
        assert [side.stopped() for side in sides] == [True, True, False]
    assert [side.stopped() for side in sides] == [False, False, False]


def test_a_side_is_resumed_when_its_turn_fails(measures: Any, sides: list[Sleeper]) -> None:
    turns = measures.Turns(sides)
    with pytest.raises(RuntimeError), turns.of(sides[0]):
        raise RuntimeError("a run ended CRASHED")
    assert [side.stopped() for side in sides] == [False, False, False]


def test_time_stopped_is_counted_since_each_sides_last_turn(measures: Any, sides: list[Sleeper]) -> None:
    a, b, _ = sides
    turns = measures.Turns(sides)
    with turns.of(a):
        pass
    with turns.of(b):
        pass
    stopped = {side.label: turns.stopped[id(side)] for side in sides}
    assert stopped["b"] == 0.0  # its turn just ended
    assert stopped["c"] > stopped["a"] > 0.0  # c through both turns, a through b's only


def test_a_joined_floor_takes_turns_with_the_systems_and_leaves_after(measures: Any, sides: list[Sleeper]) -> None:
    a, b, floor = sides
    turns = measures.Turns([a, b])
    with turns.joined(floor):
        with turns.of(a):  # the floor is stopped in a system's turn, as the other system
            assert [side.stopped() for side in sides] == [False, True, True]
        with turns.of(floor):  # and the systems in the floor's
            assert [side.stopped() for side in sides] == [True, True, False]
    assert turns.sides == [a, b] and id(floor) not in turns.stopped
    with turns.of(a):  # gone from the rotation: no longer stopped
        assert [side.stopped() for side in sides] == [False, True, False]
