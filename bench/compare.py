"""This project and Prefect 3.9.1 side by side, on this machine, in one run.

Our side runs twice -- on PostgreSQL + Redis (databases ``orch_bench_cmp``/``orch_bench_cmp_sched``
recreated, Redis dbs 13/14 flushed) and on the embedded defaults (SQLite + SQLAlchemy broker in a
fresh ORCH_HOME) -- with the default settings (worker heartbeat 10 s -> gone after 30 s, reaper every
5 s). Prefect 3.9.1 is installed from PyPI into its own venv (bench/compare/prefect_side.py) and runs
on its defaults (SQLite in a temporary PREFECT_HOME, analytics off, bound to 127.0.0.1). Every side:
a server, a process work pool, a worker with limit 8, a no-op and a sleeping flow
(bench/prefect_flows/ for Prefect). Everything runs as a user would run it, as subprocesses.

Figures (alternating between the sides where runs are independent; every wait is bounded):
 1. SDK import: ``python -c "from X import flow"``, median;
 2. server cold start: process start -> health OK, on an empty database and on a restart;
 3. API create -> RUNNING and -> COMPLETED of a no-op run (POST sent -> the server's start_time /
    end_time; one run at a time), p50 and p95;
 4. idle RSS of the server's and the worker's process trees;
 5. create-run API: sequential runs/s, and 20 concurrent clients (runs/s, errors), on a pool
    nobody serves;
 6. 100 no-op runs at once, worker limit 8: first POST -> last end_time, runs per minute;
 7. cancel of a RUNNING run: request -> process gone, -> CANCELLED;
 8. SIGKILL to the worker and the flow-run process -> run final (bounded);
 9. scheduler: N hourly interval deployments written while no scheduler runs, then server start ->
    every deployment has its 3 runs ahead (bench/compare/sched.py).
Figures 3, 5, 6 and 7 are taken on one system at a time: the other systems' processes are stopped
(SIGSTOP) for each run, batch, cancel and create-run load (``compare.common.others_stopped``).

Then issue 22's goals: our PostgreSQL + Redis figures against each goal and against the floor of the
stack measured in the same run with the floor scripts' code (bench/compare/floors.py: run_floor.py's
in the latency figure's rotation, create_floor.py's under the same create-run load, start_floor.py's in the
cold-start rotation, memory_floor.py's idle floors, ``python -c pass`` beside the import), and the
bench command that profiles each (bench/compare/goals.py).

Usage: python bench/compare.py [--quick] [--write] [--database orch_bench_cmp] [--redis-db 13]
--quick: fewer runs and deployments, a smoke check (prints; writes bench/RESULTS.md only with --write).
--database NAME / --redis-db N: ours on NAME and Redis db N, the scheduler figure on NAME_sched and
db N+1, the floors on NAME_floor and db N+2 (each recreated / flushed).
A full run writes the section "Side by side with Prefect 3.9.1" of bench/RESULTS.md; raw figures go
to /tmp/orch-bench-compare.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # compare/ and skeleton.py
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's project, not another install

from compare import floors, measures, sched
from compare.common import others_stopped, pct
from compare.goals import NOTES as GOALS_NOTES
from compare.goals import goal_rows, render_goals
from compare.ours import LABELS, MAIN_DB, MAIN_REDIS, OursSide, base_env, precompile
from compare.prefect_side import PY, VERSION, PrefectSide, ensure_venv, prefect_env
from compare.report import Row, render, write_section

PG, EMB, PF = LABELS["postgres"], LABELS["embedded"], PrefectSide.label
OURS = [PG, EMB]
RAW = Path("/tmp/orch-bench-compare.json")


class Plan:
    def __init__(self, quick: bool, database: str = MAIN_DB, redis_db: int = MAIN_REDIS) -> None:
        self.quick = quick
        self.database, self.redis_db = database, redis_db  # ours'; the scheduler's and the floors' derive
        self.sched_database, self.sched_redis = f"{database}_sched", redis_db + 1
        self.floor_database, self.floor_redis = f"{database}_floor", redis_db + 2
        self.imports = 3 if quick else 10
        self.cold = 1 if quick else 3
        self.runs = 3 if quick else 20
        self.batch = 20 if quick else 100
        # One batch is one sample of a machine's minute (1,497 then 1,649-1,904 /min in one session):
        # the median of three, for a side whose batch takes seconds (Prefect's takes minutes: once).
        self.batch_rounds = 1 if quick else 3
        self.sequential = 30 if quick else 200
        self.clients, self.per_client = 20, 5 if quick else 25
        self.cancels = 1 if quick else 5
        self.kill_bound = 60.0 if quick else 180.0
        self.schedules = [50] if quick else [200, 10000]
        self.sched_bound = 120.0 if quick else 600.0


PHASE_LOADS: list[float] = []  # load average at each phase's start: other sessions share the machine


def phase(name: str, errors: dict[str, str], fn: Callable[[], None]) -> None:
    PHASE_LOADS.append(os.getloadavg()[0])
    print(f"== {name} (load {PHASE_LOADS[-1]:.2f})", flush=True)
    began = time.perf_counter()
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - one broken phase must not lose the others' figures
        traceback.print_exc()
        errors[name] = f"{type(error).__name__}: {str(error)[:300]}"
    print(f"   {name}: {time.perf_counter() - began:.0f} s", flush=True)


def run_all(plan: Plan) -> tuple[dict[str, Any], dict[str, str]]:
    raw: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def imports() -> None:
        home = Path(tempfile.mkdtemp(prefix="orch-cmp-import-"))
        try:
            raw["import"] = measures.import_times({
                "ours": ([sys.executable, "-c", "from orchestrator import flow"],
                         base_env(home, "http://127.0.0.1:9/api")),
                # the floor: the same interpreter, with the same environment, importing nothing
                "floor": ([sys.executable, "-c", "pass"], base_env(home, "http://127.0.0.1:9/api")),
                PF: ([str(PY), "-c", "from prefect import flow"], prefect_env(home, "http://127.0.0.1:9/api")),
            }, plan.imports)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def cold() -> None:
        floor_url, floor_broker = floors.start_database(plan.floor_database, plan.floor_redis)
        raw["cold"] = measures.cold_starts(
            {PG: lambda: ours("postgres"), EMB: lambda: ours("embedded"), PF: PrefectSide,
             "floor": lambda: floors.StartFloor(floor_url),
             "stack floor": lambda: floors.StartFloor(floor_url, floor_broker, stack=True)},
            plan.cold)  # type: ignore[dict-item]
        raw.setdefault("floors", {}).update(start=raw["cold"].pop("floor"), start_stack=raw["cold"].pop("stack floor"))

    def ours(config: str) -> OursSide:
        return OursSide(config, database=plan.database, redis_db=plan.redis_db)

    precompile()
    phase("SDK import", errors, imports)
    phase("server cold start", errors, cold)

    sides = [ours("postgres"), ours("embedded"), PrefectSide()]
    try:
        for side in sides:
            phase(f"set up {side.label}", errors, side.setup)
        if not any(name.startswith("set up") for name in errors):
            main_phases(plan, sides, raw, errors)
    finally:
        for side in sides:
            side.stop()

    def scheduler() -> None:
        raw["scheduler"] = {}
        for count in plan.schedules:
            for label, measure in ((PG, lambda n=count: sched.measure_ours("postgres", n, plan.sched_bound,
                                                                           database=plan.sched_database,
                                                                           redis_db=plan.sched_redis)),
                                   (EMB, lambda n=count: sched.measure_ours("embedded", n, plan.sched_bound,
                                                                            database=plan.sched_database,
                                                                            redis_db=plan.sched_redis)),
                                   (PF, lambda n=count: sched.measure_prefect(n, plan.sched_bound))):
                print(f"   {count} deployments, {label} ...", flush=True)
                raw["scheduler"].setdefault(str(count), {})[label] = result = measure()
                print(f"   -> {result}", flush=True)

    phase("scheduler", errors, scheduler)
    return raw, errors


def main_phases(plan: Plan, sides: list[Any], raw: dict[str, Any], errors: dict[str, str]) -> None:
    found = raw.setdefault("floors", {})
    turns = measures.Turns(sides)  # each system's runs, batches and cancels taken alone

    def latency() -> None:
        # run_floor.py's floor in the same rotation as the three systems, each of its runs taken
        # alone as theirs (the systems stopped), after the same idle gaps: on some machines a run
        # after seconds of idle costs half as much again as one right after another, the floor's too
        # (bench/RESULTS.md, issue 22), so a floor run back to back would not be the systems' floor.
        floor = floors.run_side(plan.floor_database, plan.floor_redis)
        try:
            with others_stopped(sides, None):
                floor.setup()
            with turns.joined(floor):
                taken = measures.create_to_final([*sides, floor], plan.runs, turns=turns)
        finally:
            floor.stop()
        found["run"] = taken.pop(floor.label)
        raw["latency"] = taken

    def rss() -> None:
        raw["rss"] = measures.idle_rss(sides)

    def memory_floors() -> None:
        found["memory"] = floors.memory(plan.floor_database, plan.floor_redis)
        print(f"   {found['memory']}", flush=True)

    def create_api() -> None:
        raw["create_api"] = {}
        writes = None
        for side in measures.rotated(sides, 0):
            with others_stopped(sides, side):
                raw["create_api"][side.label], ids = measures.create_api(side, plan.sequential, plan.clients,
                                                                         plan.per_client)
            if isinstance(side, OursSide):
                if side.config == "postgres":  # the writes floor's texts: from ours' runs, before they go
                    writes = floors.writes_texts(side.database, side.database_url, side.deployments["idle"])
                measures.cleanup_runs(side, ids)
            print(f"   {side.label}: {raw['create_api'][side.label]}", flush=True)
        with others_stopped(sides, None):  # create_floor.py's floors, under the same load, alone too
            found["create"] = floors.create_api(plan.floor_database, plan.floor_redis, plan.sequential,
                                                plan.clients, plan.per_client, writes=writes)
        print(f"   floor: {found['create']}", flush=True)

    def batch() -> None:
        raw["batch"] = measures.batches(sides, plan.batch, plan.batch_rounds, timeout=900, turns=turns)
        for label, figures in raw["batch"].items():
            print(f"   {label}: {figures}", flush=True)

    def cancel() -> None:
        raw["cancel"] = measures.cancel_running(sides, plan.cancels, turns=turns)

    def kill() -> None:
        raw["kill9"] = measures.kill9(sides, plan.kill_bound)

    phase("create -> RUNNING / COMPLETED", errors, latency)
    phase("idle RSS", errors, rss)
    phase("idle RSS of the floors", errors, memory_floors)
    phase(f"{plan.batch} runs at limit 8", errors, batch)
    phase("cancel a RUNNING run", errors, cancel)
    phase("kill -9 worker + flow process", errors, kill)
    # Last on these servers: 20 clients at once leave Prefect's SQLite-backed server answering 503
    # for a while, which would fail the phases after it.
    phase("create-run API", errors, create_api)


def rows(raw: dict[str, Any], plan: Plan) -> list[Row]:
    out: list[Row] = []

    def add(label: str, unit: str, better: str, values: dict[str, float], **kw: Any) -> Row:
        row = Row(label, unit, better, values, **kw)
        out.append(row)
        return row

    if "latency" in raw:
        for key, name in (("running", "RUNNING"), ("completed", "COMPLETED")):
            for q in (0.5, 0.95):
                add(f"API create → {name} p{int(q * 100)} ({plan.runs} runs)", "s", "lower",
                    {label: pct(v[key], q) for label, v in raw["latency"].items()})
    if "batch" in raw:
        add(f"{plan.batch} no-op runs, worker limit 8: makespan (median of up to {plan.batch_rounds})", "s", "lower",
            {label: v["makespan"] for label, v in raw["batch"].items()})
        add(f"{plan.batch} no-op runs: runs per minute", "/min", "higher",
            {label: v["per_minute"] for label, v in raw["batch"].items()})
    if "create_api" in raw:
        ca = raw["create_api"]
        add(f"create-run API, sequential ({plan.sequential} runs)", "/s", "higher",
            {label: v["sequential_per_s"] for label, v in ca.items()})
        add("↳ errors among them", "count", "", {label: v["sequential_errors"] for label, v in ca.items()})
        add(f"create-run API, {plan.clients} concurrent clients ({plan.clients * plan.per_client} runs)", "/s",
            "higher", {label: v["concurrent_per_s"] for label, v in ca.items()})
        add("↳ errors among them", "count", "", {label: v["concurrent_errors"] for label, v in ca.items()})
    if "scheduler" in raw:
        for count, per in raw["scheduler"].items():
            row = add(f"scheduler: {int(count):,} interval deployments, server start → each has its runs ahead",
                      "s", "lower", {label: v["seconds"] for label, v in per.items()})
            for label, v in per.items():
                if math.isinf(v["seconds"]):
                    row.texts[label] = f"> {v['bound']:.0f} s, stopped ({v['done']:,} of {int(count):,} done)"
                    row.bound = v["bound"]
            add("↳ of it after health OK (the scheduler's own work)", "s", "lower",
                {label: v.get("after_health", float("inf")) for label, v in per.items()})
    if "cancel" in raw:
        for key, name in (("gone", "process gone"), ("cancelled", "CANCELLED")):
            add(f"cancel a RUNNING run → {name} (median of {plan.cancels})", "s", "lower",
                {label: sorted(v[key])[len(v[key]) // 2] for label, v in raw["cancel"].items()})
    if "kill9" in raw:
        row = add("kill -9 worker + flow process → run final", "s", "lower",
                  {label: v["seconds"] for label, v in raw["kill9"].items()})
        for label, v in raw["kill9"].items():
            if math.isinf(v["seconds"]):
                row.texts[label] = f"> {v['bound']:.0f} s, still {v['state']}"
                row.bound = v["bound"]
            else:
                row.texts[label] = f"{v['seconds']:.1f} s ({v['state']})"
    if "import" in raw:
        add(f"SDK import `from X import flow` (median of {plan.imports})", "s", "lower",
            {PG: raw["import"]["ours"], EMB: raw["import"]["ours"], PF: raw["import"][PF]})
    if "cold" in raw:
        for key, name in (("empty", "empty database"), ("restart", "restart")):
            add(f"server cold start → health OK, {name} (median of {plan.cold})", "s", "lower",
                {label: sorted(v[key])[len(v[key]) // 2] for label, v in raw["cold"].items()})
    if "rss" in raw:
        for key, name in (("server", "server (process tree)"), ("worker", "worker (process tree)"),
                          ("worker_alone", "worker process alone")):
            add(f"idle RSS, {name}", "MB", "lower", {label: v[key] for label, v in raw["rss"].items()})
        add("idle PSS, worker (process tree)", "MB", "lower",
            {label: v["worker_pss"] for label, v in raw["rss"].items() if "worker_pss" in v})
    return out


def describe_tree() -> str:
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=False).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "orchestrator", "workers", "pools", "job_templates"],
                           cwd=root, capture_output=True, text=True, check=False).stdout.strip()
    return f"commit {head.strip()}" + (" plus uncommitted changes in the working tree" if dirty else "")


def body(table: str, goals: str, command: str, load: tuple[float, float], errors: dict[str, str]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    peak = max([*load, *PHASE_LOADS])
    noisy = peak > (os.cpu_count() or 2) * 0.75
    lines = [
        f"- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; {describe_tree()}",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load[0]:.2f} at the start, {load[1]:.2f} at the end, "
        f"up to {peak:.2f} at a phase's start"
        + (" — **other sessions were loading the machine: the figures are noisy**" if noisy else ""),
        f"- Command: `{command}`",
        ("- Columns: our PostgreSQL + Redis stack, our embedded defaults (SQLite + SQLAlchemy broker), Prefect "
        f"{VERSION} on its defaults (SQLite, analytics off); \"× better\" = Prefect's figure ÷ ours for times, "
        "ours ÷ Prefect's for rates (> 1: we are better)."),
        "",
        table,
        "",
        ("- Latency: POST sent (client clock) → the server's `start_time` / `end_time` of that run (same machine, "
        "same clock), one run at a time, the three systems in turn; 2 warm-up runs each. Prefect's worker polls "
        "every 10 s (`PREFECT_WORKER_QUERY_SECONDS` default); ours is pushed through the broker, and our process "
        "worker forks each flow-run process from a fork server that has imported the engine (`ORCH_WORKER_PREWARM`, on by "
        "default)."),
        ("- Our side runs this checkout's code (PYTHONPATH; the system python's `orch` console script). "
         "All three systems' servers and workers are up from figure 3 to 8, but each run of the create → "
         "RUNNING / COMPLETED rows, each batch of the 100-run rows, each cancel and each system's create-run "
         "load is taken with the other systems' processes stopped (SIGSTOP, SIGCONT after), so that it has "
         "the 2 cores to itself, as on an otherwise idle machine; once the others are stopped, the measured "
         f"system is given {measures.SETTLE:g} s for the timers that fell due while it was stopped itself "
         f"(heartbeats, service passes, pollers), {measures.LONG_SETTLE:g} s after a stop of "
         f"{measures.LONG_STOP:g} s or more. A system stays stopped while another's figure is taken: ~10 s for "
         "one of Prefect's runs, minutes for its batch; none of its runs is in flight meanwhile, its server and "
         "worker resume together, and the longer settle covers what a long stop leaves to redo (our worker's "
         "cancellation long-poll timed out on its client's clock and opened again 1 s later; a worker judged "
         "silent, heartbeat 10 s and gone after 30 s, takes its name back at its next beat). Idle RSS and the "
         "kill -9 are taken with all three up. RSS is the sum over the process tree (our worker's fork server "
         "counts as the worker's)."),
        ("- Create-run API: POSTs to a deployment whose pool has no worker (our runs are published to the broker "
        "all the same); errors are answers ≥ 400 or dropped connections, not retried. Prefect on SQLite (its "
        "default) answers 503 while the database is locked (its own client would retry those, with back-off); "
        "this phase runs last because Prefect's server keeps answering 503 for a while after it."),
        ("- kill -9: SIGKILL to the worker's whole process tree (and the flow-run process); our side uses the "
        "default liveness settings (heartbeat 10 s, reaper every 5 s): the API sees both processes' held requests "
        "dropped and judges them gone after a 2 s grace (connection leases, docs/concepts.md); heartbeat silence "
        "alone would take 20–35 s. Prefect has no default mechanism that ends such a run."),
        ("- Scheduler: deployments written while no scheduler runs (ours with the services straight into the "
        "database, Prefect through its API with `PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=false`), then the "
        "server is started with its defaults and the database is read every 0.05 s (0.25 s for 10,000) until each deployment has "
        "3 SCHEDULED runs; the figure includes the server's start (see the cold-start row)."),
    ]
    lines += ["", "### Goals (issue 22)", "", goals, "", *GOALS_NOTES]
    lines += [f"- Phase failed: {name}: {text}" for name, text in errors.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and deployments (smoke check)")
    parser.add_argument("--write", action="store_true", help="with --quick: write bench/RESULTS.md anyway")
    parser.add_argument("--database", default=MAIN_DB,
                        help="ours' PostgreSQL database (recreated); NAME_sched and NAME_floor beside it")
    parser.add_argument("--redis-db", type=int, default=MAIN_REDIS,
                        help="ours' Redis db (flushed); the scheduler's is the next, the floors' the one after")
    args = parser.parse_args()
    plan = Plan(args.quick, args.database, args.redis_db)
    command = "python bench/compare.py" + (" --quick" if args.quick else "") + "".join(
        f" {option} {value}" for option, value, default in (("--database", args.database, MAIN_DB),
                                                            ("--redis-db", args.redis_db, MAIN_REDIS))
        if value != default)
    load_start = os.getloadavg()[0]
    ensure_venv()
    raw, errors = run_all(plan)
    load = (load_start, os.getloadavg()[0])
    RAW.write_text(json.dumps({"raw": raw, "errors": errors, "load": load, "quick": plan.quick}, indent=1,
                              default=str))
    table = render(rows(raw, plan), OURS, PF)
    text = body(table, render_goals(goal_rows(raw, PG)), command, load, errors)
    print("\n" + text)
    if not args.quick or args.write:
        write_section(text)
        print(f"\nwritten to {Path(__file__).resolve().parent / 'RESULTS.md'}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
