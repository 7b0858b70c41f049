"""Where a server start's instructions go, module by module, against the floor of the stack (issue 22).

    python bench/start_modules.py [TREE ...] [--top 40]

Runs, under ``valgrind --tool=callgrind`` (instructions: what the machine's load does not change),
in a fresh interpreter with ``PYTHONHASHSEED=0``: the floor (bench/start_floor.py's app: FastAPI,
SQLAlchemy core, uvicorn, ``create_engine`` on PostgreSQL, one route) and, for each TREE (a checkout;
default this one), what ``orch server start`` runs before uvicorn serves (``cli.main``, ``Settings()``,
the tables, ``session``, uvicorn, ``api.app``, ``create_app(settings, database_checked=True,
run_services=False)``, uvicorn's ``Config`` and ``Server``). Each module's **self** instructions are
counted: the import machinery is wrapped so that callgrind dumps its counters when a module's import
starts and ends (``CALLGRIND_DUMP_STATS_AT``, from a small C helper compiled here), and each interval
is charged to the module then executing. Not counted: the database check's connection, uvicorn
serving, the services' first passes and the first request (bench/start_cpu.py counts those by CPU).

Prints, per tree: the total, the total above the floor by part (our schemas, the ORM, our tables,
settings ...), and the modules only ours loads, largest first. Needs gcc and valgrind's headers.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare.ours import precompile

HELPER = "#include <valgrind/callgrind.h>\nvoid mark(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }\n"

DRIVER = r'''
import ctypes, os, sys
_cg = ctypes.CDLL(os.environ["START_MODULES_HELPER"])
import _frozen_importlib as bootstrap
_load_unlocked = bootstrap._load_unlocked
_stack = []


def _load(spec):  # each interval between two dumps is the self cost of the module then on top
    _cg.mark((_stack[-1] if _stack else "<main>").encode())
    _stack.append(spec.name)
    try:
        return _load_unlocked(spec)
    finally:
        _cg.mark(spec.name.encode())
        _stack.pop()


bootstrap._load_unlocked = _load
_cg.mark(b"<interpreter + site>")
if sys.argv[1] == "floor":
    import fastapi, sqlalchemy, uvicorn, uvicorn.main
    engine = sqlalchemy.create_engine(os.environ["FLOOR_DATABASE_URL"])
    app = fastapi.FastAPI()

    @app.get("/api/health")
    def health() -> dict[str, bool]:
        return {"ok": True}
else:
    import gc
    gc.disable()  # as cli/serve.py starts
    sys.modules.setdefault("pydantic.v1", None)
    import orchestrator.cli.main
    from orchestrator.settings import Settings
    settings = Settings()
    _cg.mark(b"<Settings()>")
    from orchestrator.cli import processes, serve
    from orchestrator.server.db import final_counts, models
    from orchestrator.server.db.session import check_database
    import uvicorn
    from orchestrator.server.api.app import create_app
    from pools.broker import BrokerUnavailable
    _cg.mark(b"<main>")
    app = create_app(settings, database_checked=True, run_services=False)
    _cg.mark(b"<create_app>")
    server = serve._server_class()(serve._config(app, "127.0.0.1", 1))
_cg.mark(b"<main>")
'''

PARTS = (  # (part, module prefixes), first match wins; the rest is "other"
    ("our wire schemas (orchestrator.schemas)", ("orchestrator.schemas",)),
    ("SQLAlchemy ORM (sqlalchemy.orm ...)", ("sqlalchemy",)),
    ("our tables (server/db)", ("orchestrator.server.db",)),
    ("settings: pydantic-settings (+dotenv, argparse, RootModel) + Settings",
     ("pydantic_settings", "dotenv", "argparse", "pydantic", "typing_inspection", "orchestrator.settings",
      "<Settings()>")),
    ("background services (scheduler, dispatcher, reaper, retention, triggers, hub)",
     ("orchestrator.server.dispatcher", "orchestrator.server.reaper", "orchestrator.server.retention",
      "orchestrator.server.scheduler", "orchestrator.server.runs_ahead", "orchestrator.server.catchup",
      "orchestrator.server.hub", "orchestrator.server.service", "orchestrator.server.triggers",
      "orchestrator.schedules")),
    ("domain services (server/services)", ("orchestrator.server.services",)),
    ("API: app, context, gate, routes, create_app", ("orchestrator.server.api", "<create_app>")),
    ("pools/, job_templates/", ("pools", "job_templates")),
    ("the rest of ours (CLI entry, eager UI modules, errors, states ...)", ("orchestrator",)),
)


def self_instructions(name: str, tree: Path | None, helper: Path, work: Path) -> dict[str, int]:
    """Self instructions by module of the floor (``tree`` None) or of ``tree``'s start."""
    out = work / name
    out.mkdir()
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONHASHSEED": "0", "START_MODULES_HELPER": str(helper),
           "ORCH_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/orch_start_modules",
           "FLOOR_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/orch_start_modules",
           "ORCH_BROKER_URL": "redis://127.0.0.1:6379/0", "ORCH_HOME": str(work / "home")}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    subprocess.run(["valgrind", "--tool=callgrind", "-q",
                    f"--callgrind-out-file={out}/callgrind.out.%p", sys.executable, str(driver),
                    "floor" if tree is None else "ours"], env=env, check=True, timeout=1800)
    counts: collections.Counter[str] = collections.Counter()
    for dump in out.glob("callgrind.out.*"):
        text = dump.read_text()
        trigger = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.MULTILINE)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        counts[trigger.group(1) if trigger else "<exit>"] += int(total.group(1)) if total else 0
    return dict(counts)


def part_of(module: str) -> str:
    for part, prefixes in PARTS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return part
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, help="checkouts (default: this one)")
    parser.add_argument("--top", type=int, default=40, help="modules only ours loads, to list")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.trees] or [BENCH.parent]
    for tree in trees:
        precompile(tree)
    work = Path(tempfile.mkdtemp(prefix="start-modules-"))
    helper = work / "libmark.so"
    (work / "mark.c").write_text(HELPER)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(helper), str(work / "mark.c")], check=True)
    floor = self_instructions("floor", None, helper, work)
    print(f"floor: {sum(floor.values()) / 1e6:,.0f} M instructions")
    for index, tree in enumerate(trees):
        ours = self_instructions(f"tree{index}", tree, helper, work)
        above = sum(ours.values()) - sum(floor.values())
        print(f"\n{tree}: {sum(ours.values()) / 1e6:,.0f} M instructions, {above / 1e6:+,.0f} M above the floor")
        parts: collections.Counter[str] = collections.Counter()
        for module, count in ours.items():
            if module not in floor:
                parts[part_of(module)] += count
        parts["modules the floor loads and ours does not (pydantic.v1 ...)"] = -sum(
            c for m, c in floor.items() if m not in ours)
        parts["modules both load, and the scripts' own lines: ours - floor"] = sum(
            c for m, c in ours.items() if m in floor) - sum(c for m, c in floor.items() if m in ours)
        for part, count in parts.most_common():
            print(f"  {count / 1e6:+8.1f} M  {100 * count / above:4.0f} %  {part}")
        print("  modules only ours loads, self instructions:")
        only = sorted(((c, m) for m, c in ours.items() if m not in floor), reverse=True)
        for count, module in only[:args.top]:
            print(f"  {count / 1e6:8.1f} M  {module}")
        (work / f"{tree.name}.json").write_text(json.dumps(ours))
    print(f"\nper-module counts: {work}")


if __name__ == "__main__":
    main()
