"""bench/compare.py's "Goals (issue 22)" table: each goal's verdict against our figure and the floor
of the stack measured in the same run (bench/compare/goals.py), and the table it renders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
OURS = "ours (PostgreSQL + Redis)"

pytestmark = pytest.mark.usefixtures("isolated_imports")


@pytest.fixture
def goals() -> Any:
    sys.path.insert(0, str(BENCH))
    from compare import goals

    return goals


def raw_figures() -> dict[str, Any]:
    """A compare run's raw figures (seconds, runs/s, MB), every goal's phase present."""
    return {
        "latency": {OURS: {"running": [0.015, 0.016, 0.060], "completed": [0.020, 0.035, 0.045]}},
        "batch": {OURS: {"per_minute": 3000.0}},
        "create_api": {OURS: {"sequential_per_s": 700.0, "sequential_errors": 0.0, "concurrent_per_s": 1100.0,
                              "concurrent_errors": 0.0}},
        "cold": {OURS: {"empty": [0.60, 0.55, 0.70], "restart": [0.45, 0.52, 0.51]}},
        "rss": {OURS: {"server": 91.0, "worker": 86.0}},
        "import": {"ours": 0.044, "floor": 0.038},
        "floors": {
            "run": {"running": [0.007, 0.008, 0.009], "completed": [0.009, 0.010, 0.011]},
            "create": {"sequential_per_s": 1400.0, "sequential_errors": 0.0, "concurrent_per_s": 1300.0,
                       "concurrent_errors": 0.0},
            "start": {"empty": [0.41, 0.40, 0.42], "restart": [0.42, 0.43, 0.40]},
            "memory": {"server": 79.3, "server_stack": 84.0, "worker": 59.4, "stack": 78.0},
        },
    }


def verdicts(goals: Any, raw: dict[str, Any]) -> dict[str, str]:
    return {row.goal.label: row.verdict for row in goals.goal_rows(raw, OURS)}


def test_each_goal_gets_its_verdict_from_ours_and_the_floor(goals: Any) -> None:
    assert verdicts(goals, raw_figures()) == {
        "create → RUNNING p50": "met",  # 16 ms <= 20
        "create → RUNNING p95": "not met",  # 60 ms > 50, the floor's 9 ms reaches it
        "create → COMPLETED p50": "not met",  # 35 ms > 30, the floor reaches it
        "100 no-op runs at worker limit 8": "met",  # no floor applies
        "create-run API, one client": "not met",  # 700 < 800 <= the floor's 1,400
        "create-run API, 20 clients, 0 errors": "stopped by the floor",  # the floor's 1,300 < 1,500 too
        "server cold start → health, empty database": "not met",
        "server cold start → health, restart": "not met",  # 510 ms
        "idle RSS, server": "stopped by the floor",  # 91 > 80, the server stack floor's 84 > 80 too
        "idle RSS, worker tree": "stopped by the floor",  # the stack floor's 78 > 60
        "`from orchestrator import flow`": "met",
    }


def test_errors_fail_a_create_goal_and_are_not_the_floors_fault(goals: Any) -> None:
    raw = raw_figures()
    raw["create_api"][OURS].update(sequential_per_s=900.0, sequential_errors=3.0, concurrent_errors=2.0)
    found = verdicts(goals, raw)
    assert found["create-run API, one client"] == "not met"  # 900 /s, but 3 errors
    assert found["create-run API, 20 clients, 0 errors"] == "not met"  # the floor misses too, but ours erred


def test_the_server_row_takes_the_bare_floor_from_a_run_without_the_stack_one(goals: Any) -> None:
    raw = raw_figures()
    del raw["floors"]["memory"]["server_stack"]
    row = next(row for row in goals.goal_rows(raw, OURS) if row.goal.label == "idle RSS, server")
    assert (row.floor.value, row.floor.note, row.verdict) == (79.3, "memory_floor", "not met")  # 79.3 <= 80


def test_a_failed_phase_leaves_its_goals_unmeasured_and_its_floor_said_so(goals: Any) -> None:
    raw = raw_figures()
    del raw["rss"], raw["floors"]["create"]
    rows = {row.goal.label: row for row in goals.goal_rows(raw, OURS)}
    assert rows["idle RSS, server"].verdict == "not measured"
    assert rows["create-run API, one client"].verdict == "not met"  # no floor to blame
    table = goals.render_goals(list(rows.values()))
    line = next(line for line in table.splitlines() if line.startswith("| create-run API, one client |"))
    assert "not measured (its phase failed)" in line


def test_the_table_shows_target_ours_floor_gap_verdict_and_profile(goals: Any) -> None:
    table = goals.render_goals(goals.goal_rows(raw_figures(), OURS)).splitlines()
    assert table[0].startswith("| goal (issue 22) | target | ours (PostgreSQL + Redis) | floor of the stack")
    assert len(table) == 2 + len(goals.GOALS)
    assert table[2] == ("| create → RUNNING p50 | ≤ 20 ms | 16.0 ms | 8.0 ms (run_floor); ours +8.0 ms | **met** "
                        "| `python bench/run_timeline.py --runs 30` (each hop of a run, on one clock) |")
    server = next(line for line in table if line.startswith("| idle RSS, server |"))
    assert ("| 91 MB | 84 MB (memory_floor's server stack floor; bare FastAPI + SQLAlchemy Core 79 MB); ours +7 MB "
            "| stopped by the floor |") in server
    worker = next(line for line in table if line.startswith("| idle RSS, worker tree |"))
    assert "| 86 MB | 78 MB (memory_floor's stack floor; bare Celery + fork 59 MB); ours +8 MB | stopped by the floor |" \
        in worker
    create = next(line for line in table if line.startswith("| create-run API, one client |"))
    assert "| 700 /s | 1,400 /s (create_floor); ours 50% of it | not met |" in create


def test_one_client_is_judged_against_the_writes_floor_twenty_against_the_one_row_floor(goals: Any) -> None:
    raw = raw_figures()
    raw["floors"]["create"]["writes"] = {"sequential_per_s": 640.0, "sequential_errors": 0.0,
                                         "concurrent_per_s": 750.0, "concurrent_errors": 0.0}
    rows = {row.goal.label: row for row in goals.goal_rows(raw, OURS)}
    one, twenty = rows["create-run API, one client"], rows["create-run API, 20 clients, 0 errors"]
    # 700 < 800, and a bare route writing ours' rows and pushing to Redis does 640 < 800 too
    assert (one.floor.value, one.verdict) == (640.0, "stopped by the floor")
    assert "one-row INSERT 1,400 /s" in one.floor.note
    # 20 clients: ours writes creates arriving together in one statement, the writes floor does not
    assert (twenty.floor.value, twenty.floor.note) == (1300.0, "create_floor")
    raw["floors"]["create"]["writes"]["sequential_per_s"] = 900.0
    assert {row.goal.label: row.verdict for row in goals.goal_rows(raw, OURS)}["create-run API, one client"] == "not met"


def test_the_starts_are_judged_against_the_server_stack_floor_the_bare_one_beside(goals: Any) -> None:
    raw = raw_figures()
    raw["floors"]["start_stack"] = {"empty": [0.58, 0.60, 0.59], "restart": [0.61, 0.57, 0.60]}
    rows = {row.goal.label: row for row in goals.goal_rows(raw, OURS)}
    restart = rows["server cold start → health, restart"]
    assert (restart.floor.value, restart.verdict) == (0.60, "stopped by the floor")  # 510 ms; the stack floor 600
    assert restart.floor.note == "start_floor's server stack floor; bare FastAPI + SQLAlchemy Core 420 ms"
    line = next(line for line in goals.render_goals(list(rows.values())).splitlines()
                if line.startswith("| server cold start → health, restart |"))
    assert "| 510 ms | 600 ms (start_floor's server stack floor; bare FastAPI + SQLAlchemy Core 420 ms); ours −90.0 ms" \
        in line
