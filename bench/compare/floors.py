"""The floors of the stack (issue 22), measured by bench/compare.py in the same run as the figures
they bound, with the floor scripts' own apps and functions (each script says what its floor is):

* ``run_side``: bench/run_floor.py's ``FloorSide`` -- a bare FastAPI + SQLAlchemy app and a bare
  forking worker on PostgreSQL + Redis, the same hops as our run path (create, push, claim, fork,
  RUNNING, COMPLETED); its runs are taken as the systems' (``measures.create_to_final``), right
  after theirs with the systems stopped: not in their rotation, where its worker's one HTTP
  connection, which uvicorn closes after 5 idle seconds and which it does not reopen, died
  during one of Prefect's ~10 s runs;
* ``create_api``: bench/create_floor.py's ``floor`` -- a bare FastAPI route doing one SQLAlchemy
  Core INSERT and its commit on PostgreSQL -- under the compare's create-run load
  (``measures.create_api``), after create_floor.py's warm-up;
* ``StartFloor``: bench/start_floor.py's bare FastAPI + SQLAlchemy + uvicorn app (one health route
  running ``SELECT 1`` on PostgreSQL), process start -> first healthy answer, taken in the
  compare's cold-start rotation (``measures.cold_starts``);
* ``memory``: bench/memory_floor.py's server floor (bare FastAPI + SQLAlchemy Core), server stack
  floor (the same with the pydantic-settings settings and the SQLAlchemy ORM every server of this
  stack has: a declarative Base, one mapped table, a Session per request), worker floor (a bare
  Celery worker with ours' options + a bare process kept ready to fork) and stack floor (the same
  with the settings and pydantic every process of this stack has), idle RSS summed over each
  process tree.

All of them use one PostgreSQL database and one Redis db of their own (recreated / flushed by each).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import create_floor
import memory_floor
import run_floor
import start_floor

from compare import measures
from compare.common import Side, free_port
from compare.ours import base_env
from tests.harness import fresh_postgres


def run_side(database: str, redis_db: int) -> Side:
    """bench/run_floor.py's floor, not yet set up (``setup()`` starts its server and worker)."""
    return run_floor.FloorSide(database, redis_db)


def create_api(database: str, redis_db: int, sequential: int, clients: int, per_client: int) -> dict[str, Any]:
    """bench/create_floor.py's ``floor`` app under ``measures.create_api``'s load, as the compare
    puts it on each system; warmed up first as create_floor.py warms its sides."""
    tmp = Path(tempfile.mkdtemp(prefix="orch-cmp-create-floor-"))
    (tmp / "floorapp.py").write_text(create_floor.FLOOR_APP)
    database_url, _ = fresh_postgres(database, redis_db)
    env = {**base_env(tmp / "home", "http://127.0.0.1:1/api"), "FLOOR_DATABASE_URL": database_url}
    side = create_floor.Bare("floor", tmp, env, True, database)
    try:
        measures.create_api(side, 50, 4, 10)
        result, _ = measures.create_api(side, sequential, clients, per_client)
        return result
    finally:
        side.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class StartFloor:
    """bench/start_floor.py's bare app with the methods ``measures.cold_starts`` calls. Each
    ``start_server`` is one ``start_floor.time_start``: exec -> first healthy answer (polled every
    10 ms), then the process is stopped. The app makes no tables: its empty-database start and its
    restart are the same start."""

    label = "floor"

    def __init__(self, database_url: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="orch-cmp-start-floor-"))
        (self.tmp / "floorapp.py").write_text(start_floor.FLOOR_APP)
        self.env = {**base_env(self.tmp / "home", "http://127.0.0.1:1/api"), "FLOOR_DATABASE_URL": database_url}
        self.server = None
        self.rss: list[float] = []  # MB, the process's RSS at its first healthy answer

    def fresh_database(self) -> None:
        """Nothing to empty: the app keeps no data."""

    def start_server(self) -> float:
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "floorapp:app", "--port", str(port), "--log-level", "warning"]
        seconds, rss = start_floor.time_start(argv, self.env, port, self.tmp)
        self.rss.append(rss)
        return seconds

    def stop_process(self, proc: object) -> None:
        """``start_server`` has stopped it already."""

    def stop(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_database(database: str, redis_db: int) -> str:
    """The (recreated) database the start floor's health route reads."""
    return fresh_postgres(database, redis_db)[0]


def memory(database: str, redis_db: int, settle: float = 5.0) -> dict[str, float]:
    """Idle RSS (MB) of bench/memory_floor.py's floors: ``server`` (bare), ``server_stack`` (with
    pydantic-settings and the ORM), ``worker`` (bare Celery + a bare process kept ready) and ``stack``
    (the same with pydantic-settings and pydantic), each summed over its process tree as the compare
    sums ours; ``settle`` idle seconds before each reading."""
    args = argparse.Namespace(database=database, redis_db=redis_db, settle=settle, profile=None)
    tmp = Path(tempfile.mkdtemp(prefix="orch-cmp-memory-floor-"))
    try:
        return {"server": sum(p["rss"] for p in memory_floor.floor_server(args, tmp)),
                "server_stack": sum(p["rss"] for p in memory_floor.floor_server(args, tmp, stack=True)),
                "worker": sum(p["rss"] for p in memory_floor.floor_worker(args, tmp)),
                "stack": sum(p["rss"] for p in memory_floor.floor_worker(args, tmp, stack=True))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
