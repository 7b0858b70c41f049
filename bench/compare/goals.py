"""Issue 22's goals against our PostgreSQL + Redis figures and the floors of the stack measured in
the same run (bench/compare/floors.py): the "Goals (issue 22)" table of bench/compare.py's section.

A goal is **met** when our figure reaches it (a create-run figure with errors never does);
**stopped by the floor** when ours does not, without errors, and the floor of the stack -- the least
any system built on it pays, measured beside ours -- does not reach it either; **not met** when ours
does not and the floor does, or no floor was measured, or ours had errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from compare.common import pct
from compare.report import fmt

MET, NOT_MET, FLOOR, UNMEASURED = "met", "not met", "stopped by the floor", "not measured"


@dataclass(frozen=True)
class Goal:
    label: str
    unit: str  # as report.fmt: "s", "/s", "/min", "MB"
    target: float
    better: str  # "lower" or "higher"
    profile: str  # the bench command that shows where the time / memory goes

    def reached(self, value: float, errors: float = 0.0) -> bool:
        if math.isnan(value) or errors:
            return False
        return value <= self.target if self.better == "lower" else value >= self.target

    @property
    def target_text(self) -> str:
        return ("≤ " if self.better == "lower" else "≥ ") + fmt(self.target, self.unit)


@dataclass(frozen=True)
class Figure:
    """A measured value (NaN: not measured) and the errors counted with it (create-run API)."""

    value: float = math.nan
    errors: float = 0.0
    note: str = ""  # after the value: which floor, or why there is none

    def text(self, unit: str) -> str:
        if math.isnan(self.value):
            return self.note or "–"
        errors = f", {self.errors:.0f} errors" if self.errors else ""
        return f"{figure(self.value, unit)}{errors}" + (f" ({self.note})" if self.note else "")


def figure(value: float, unit: str) -> str:
    """``report.fmt``, with a tenth of a millisecond below 100 ms (the floors are a few ms)."""
    return f"{value * 1000:.1f} ms" if unit == "s" and value < 0.1 else fmt(value, unit)


@dataclass(frozen=True)
class GoalRow:
    goal: Goal
    ours: Figure
    floor: Figure  # NaN value: no floor applies, or it was not measured (its note says which)

    @property
    def verdict(self) -> str:
        if math.isnan(self.ours.value):
            return UNMEASURED
        if self.goal.reached(self.ours.value, self.ours.errors):
            return MET
        if (not self.ours.errors and not math.isnan(self.floor.value)
                and not self.goal.reached(self.floor.value, self.floor.errors)):
            return FLOOR
        return NOT_MET

    @property
    def gap(self) -> str:
        """How far ours is from the floor: above it by so much (times, MB), or its share (rates)."""
        if math.isnan(self.ours.value) or math.isnan(self.floor.value) or self.floor.value <= 0:
            return ""
        if self.goal.better == "higher":
            return f"ours {self.ours.value / self.floor.value:.0%} of it"
        sign = "+" if self.ours.value >= self.floor.value else "−"
        return f"ours {sign}{figure(abs(self.ours.value - self.floor.value), self.goal.unit)}"


# Under the table, in bench/compare.py's section.
NOTES = [
    ("- Ours: the PostgreSQL + Redis column above. The floor of the stack is measured in this run with the "
     "floor scripts' own code (bench/compare/floors.py), each as ours is measured: `run_floor`, bench/run_floor.py's "
     "bare FastAPI + SQLAlchemy app and bare forking worker on PostgreSQL + Redis with the same hops as our run "
     "path (create and push, claim, fork, RUNNING, COMPLETED), its runs in the same rotation as the systems' (a fourth side taking turns, each run alone after the same stops and idle gaps); "
     "`create_floor`, bench/create_floor.py's bare FastAPI route doing one INSERT and its commit, under the same "
     "create-run load with all three systems stopped; for one client, its writes floor beside it: the same "
     "bare route writing what ours writes for a run (ours' one statement: the run, its first state, its event "
     "and the event's related resources, on ours' database) and pushing a message of ours' size to Redis, no "
     "Python of ours (for 20 clients the one-row floor stays: ours writes creates arriving together in one "
     "statement); `start_floor`, bench/start_floor.py's server stack floor, started in the cold-start "
     "rotation: a bare FastAPI + SQLAlchemy + uvicorn app with the pydantic-settings settings, the SQLAlchemy "
     "ORM (one mapped table, made if missing) and the broker reached at start that every server of this stack "
     "has, the start's garbage collector held off as ours holds it (the bare app whose health route runs "
     "`SELECT 1` beside it; one figure for both start rows; ours migrates an empty database); "
     "`memory_floor`, bench/memory_floor.py's idle floors, each RSS row against its stack floor: for the server, a bare "
     "FastAPI + SQLAlchemy app with the pydantic-settings settings and the SQLAlchemy ORM every server of this stack "
     "has (a declarative Base, one mapped table, a Session per request; the bare Core app beside it); for the worker "
     "tree, a bare Celery worker with our worker's options and a process kept ready to fork, both with the "
     "pydantic-settings and pydantic every process of this stack has (the bare Celery one beside it); `python -c pass`, the same "
     "interpreter and environment importing nothing, alternating with the import. Servers' health is polled "
     "every 10 ms, ours and the floor's alike."),
    ("- Verdict: **met** when our figure reaches the target (and the create-run API answered no error); "
     "*stopped by the floor* when ours does not and the floor measured beside it does not either; *not met* "
     "when ours does not and the floor does, or no floor applies. The last column is the bench command that "
     "shows where the time or the memory goes."),
]

RUN_PROFILE = "`python bench/run_timeline.py --runs 30` (each hop of a run, on one clock)"
GOALS = {
    "running_p50": Goal("create → RUNNING p50", "s", 0.020, "lower", RUN_PROFILE),
    "running_p95": Goal("create → RUNNING p95", "s", 0.050, "lower", RUN_PROFILE),
    "completed_p50": Goal("create → COMPLETED p50", "s", 0.030, "lower", RUN_PROFILE),
    "batch": Goal("100 no-op runs at worker limit 8", "/min", 1500.0, "higher",
                  "`python bench/worker_path.py --batch 100` (CPU per run, worker + server + PostgreSQL)"),
    "create_one": Goal("create-run API, one client", "/s", 800.0, "higher",
                       "`python bench/compare/profile_ours.py create-api` (py-spy of the server)"),
    "create_20": Goal("create-run API, 20 clients, 0 errors", "/s", 1500.0, "higher",
                      "`python bench/compare/profile_ours.py create-api` (py-spy of the server)"),
    "cold_empty": Goal("server cold start → health, empty database", "s", 0.5, "lower",
                       "`python bench/compare/profile_ours.py cold-start` (py-spy, exec → health)"),
    "cold_restart": Goal("server cold start → health, restart", "s", 0.5, "lower",
                         "`python bench/compare/profile_ours.py cold-start --restart`"),
    "rss_server": Goal("idle RSS, server", "MB", 80.0, "lower",
                       "`python bench/memory_floor.py --profile DIR` (modules and allocations per process)"),
    "rss_worker": Goal("idle RSS, worker tree", "MB", 60.0, "lower",
                       "`python bench/memory_floor.py --profile DIR` (modules and allocations per process)"),
    "import": Goal("`from orchestrator import flow`", "s", 0.050, "lower",
                   "`python -X importtime -c \"from orchestrator import flow\"`"),
}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else math.nan


def goal_rows(raw: dict[str, Any], ours: str) -> list[GoalRow]:
    """The table's rows from bench/compare.py's raw figures (``ours``: the PostgreSQL + Redis
    column's label; the floors under ``raw["floors"]``). A phase that failed leaves its rows' figures
    NaN ("not measured")."""
    floors = raw.get("floors", {})
    missing = Figure(note="not measured (its phase failed)")
    rows: list[GoalRow] = []

    def add(key: str, value: Figure, floor: Figure) -> None:
        rows.append(GoalRow(GOALS[key], value, floor))

    latency, run = raw.get("latency", {}).get(ours), floors.get("run")
    for key, kind, q in (("running_p50", "running", 0.5), ("running_p95", "running", 0.95),
                         ("completed_p50", "completed", 0.5)):
        add(key, Figure(pct(latency[kind], q)) if latency else Figure(),
            Figure(pct(run[kind], q), note="run_floor") if run else missing)
    batch = raw.get("batch", {}).get(ours)
    add("batch", Figure(batch["per_minute"]) if batch else Figure(),
        Figure(note="none measured (no floor script runs a batch)"))
    create, floor = raw.get("create_api", {}).get(ours), floors.get("create")
    for key, rate, errors in (("create_one", "sequential_per_s", "sequential_errors"),
                              ("create_20", "concurrent_per_s", "concurrent_errors")):
        add(key, Figure(create[rate], create[errors]) if create else Figure(),
            create_floor(floor, rate, errors, writes=key == "create_one") if floor else missing)
    cold, start = raw.get("cold", {}).get(ours), floors.get("start")
    for key, kind in (("cold_empty", "empty"), ("cold_restart", "restart")):
        add(key, Figure(median(cold[kind])) if cold else Figure(),
            start_floor(start, floors.get("start_stack")) if start else missing)
    rss, memory = raw.get("rss", {}).get(ours), floors.get("memory")
    add("rss_server", Figure(rss["server"]) if rss else Figure(), server_floor(memory) if memory else missing)
    add("rss_worker", Figure(rss["worker"]) if rss else Figure(),
        Figure(memory["stack"], note=f"memory_floor's stack floor; bare Celery + fork {memory['worker']:.0f} MB")
        if memory else missing)
    imports = raw.get("import", {})
    add("import", Figure(imports["ours"]) if "ours" in imports else Figure(),
        Figure(imports["floor"], note="`python -c pass`") if "floor" in imports else missing)
    return rows


def create_floor(floor: dict[str, Any], rate: str, errors: str, *, writes: bool) -> Figure:
    """The create-run API's floor. One client (``writes``): create_floor's writes floor -- the rows
    ours writes for a run, in ours' one statement, and the push to Redis, by a bare route -- when
    measured, the one-row INSERT beside it. Twenty clients: the one-row INSERT (the writes floor
    writes each request's rows apart, where ours writes the creates arriving together in one
    statement, so it is no floor of ours there)."""
    bare = floor[rate]
    if writes and "writes" in floor:
        found = floor["writes"]
        return Figure(found[rate], found[errors],
                      f"create_floor's writes floor: ours' rows and the Redis push; one-row INSERT {fmt(bare, '/s')}")
    return Figure(bare, floor[errors], "create_floor")


def start_floor(bare: dict[str, list[float]], stack: dict[str, list[float]] | None) -> Figure:
    """The start's floor: start_floor's server stack floor (with the settings, the ORM and the broker
    every server of this stack has), the bare one beside it; a run from before the stack floor
    existed: the bare one. Neither migrates: one figure for both starts."""
    bare_value = median(bare["empty"] + bare["restart"])
    if not stack:
        return Figure(bare_value, note="start_floor")
    return Figure(median(stack["empty"] + stack["restart"]),
                  note=f"start_floor's server stack floor; bare FastAPI + SQLAlchemy Core {figure(bare_value, 's')}")


def server_floor(memory: dict[str, float]) -> Figure:
    """The idle server's floor: the server stack floor (with the settings and the ORM every server of
    this stack loads), the bare one beside it; a run from before the stack floor existed: the bare one."""
    if "server_stack" not in memory:
        return Figure(memory["server"], note="memory_floor")
    return Figure(memory["server_stack"],
                  note=f"memory_floor's server stack floor; bare FastAPI + SQLAlchemy Core {memory['server']:.0f} MB")


def render_goals(rows: list[GoalRow]) -> str:
    lines = [("| goal (issue 22) | target | ours (PostgreSQL + Redis) | floor of the stack, same run | verdict "
              "| where it goes (profile) |"), "|---|---|---|---|---|---|"]
    for row in rows:
        unit = row.goal.unit
        verdict = row.verdict
        floor = row.floor.text(unit) + (f"; {row.gap}" if row.gap else "")
        lines.append(f"| {row.goal.label} | {row.goal.target_text} | {row.ours.text(unit)} | {floor} | "
                     f"{'**' + verdict + '**' if verdict == MET else verdict} | {row.goal.profile} |")
    return "\n".join(lines)
