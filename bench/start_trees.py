"""What bench/start_cpu.py and bench/start_instructions.py share: their arguments (the trees, rounds, the
PostgreSQL database and Redis db to recreate), the trees made ready (each checkout byte-compiled, a
folder with start_floor.py's floor apps) and the trees' turns, alternating round after round."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare.ours import precompile
from start_floor import FLOOR_APP, write_stack_app

FLOORS = ("floor", "stack")  # not checkouts: start_floor.py's bare app and its server stack floor


def parser(description: str, *, trees: str, rounds: int, database: str) -> argparse.ArgumentParser:
    """The arguments both take (a script adds its own): TREE[,TREE...], --rounds, --database, --redis-db."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("trees", help=trees)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--database", default=database, help="PostgreSQL database to recreate")
    parser.add_argument("--redis-db", type=int, default=12)
    return parser


def ready(trees: str, prefix: str, *, compiled: bool = True) -> tuple[list[str], Path]:
    """The trees named (comma-separated), each checkout byte-compiled first unless ``compiled`` is
    false (``compare.ours.precompile``: as an installed package is), and a new folder holding the
    floor apps (``floorapp.py``, the stack floor's)."""
    names = trees.split(",")
    if compiled:
        for tree in names:
            if tree not in FLOORS:
                precompile(Path(tree))
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / "floorapp.py").write_text(FLOOR_APP)
    write_stack_app(folder)
    return names, folder


def turns(trees: list[str], rounds: int) -> Iterator[str]:
    """Each tree in turn, ``rounds`` times: the trees alternate, so a change of the machine's load
    falls on them all."""
    for _ in range(rounds):
        yield from trees


def environment(
    home: str | Path, database_url: str | None = None, broker_url: str | None = None
) -> dict[str, str]:
    """This process's environment without its ORCH_ settings, ORCH_HOME ``home``; with a database and
    broker, ours and the floor apps' (ORCH_ and FLOOR_ URLs)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ORCH_")}
    env["ORCH_HOME"] = str(home)
    if database_url is not None and broker_url is not None:
        env.update(
            ORCH_DATABASE_URL=database_url,
            ORCH_BROKER_URL=broker_url,
            FLOOR_DATABASE_URL=database_url,
            FLOOR_BROKER_URL=broker_url,
        )
    return env
