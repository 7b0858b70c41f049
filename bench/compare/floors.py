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
  (``measures.create_api``), after create_floor.py's warm-up; with ``writes``
  (``writes_texts``, taken from ours' database before its runs are cleaned up), also its
  ``writes`` floor: the same bare route writing the rows ours writes for a run (ours' one
  statement, on ours' database) and pushing a message of ours' size to Redis;
* ``StartFloor``: bench/start_floor.py's bare FastAPI + SQLAlchemy + uvicorn app (one health route
  running ``SELECT 1`` on PostgreSQL) or, ``stack``, its server stack floor (the same with the
  pydantic-settings settings, the SQLAlchemy ORM, the broker reached at start), process start ->
  first healthy answer, taken in the compare's cold-start rotation (``measures.cold_starts``);
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Writes:
    """What the ``writes`` floor needs of ours: its database (ours' schema), the deployment and
    the texts made from ours' newest run of it (``writes_texts``)."""

    database: str
    database_url: str
    deployment_id: str
    texts: dict[str, str]


def writes_texts(database: str, database_url: str, deployment_id: str) -> Writes:
    """The writes floor's statement and texts from ours' newest run of ``deployment_id`` (taken
    before ours' runs are cleaned up)."""
    return Writes(database, database_url, deployment_id, create_floor.writes_texts(database_url, deployment_id))


def create_api(database: str, redis_db: int, sequential: int, clients: int, per_client: int, *,
               writes: Writes | None = None) -> dict[str, Any]:
    """bench/create_floor.py's ``floor`` app under ``measures.create_api``'s load, as the compare
    puts it on each system; warmed up first as create_floor.py warms its sides. With ``writes``,
    its ``writes`` floor too, on ours' database (ours stopped), under ``"writes"``."""
    tmp = Path(tempfile.mkdtemp(prefix="orch-cmp-create-floor-"))
    (tmp / "floorapp.py").write_text(create_floor.FLOOR_APP)
    (tmp / "writesapp.py").write_text(create_floor.WRITES_APP)
    database_url, broker_url = fresh_postgres(database, redis_db)
    env = {**base_env(tmp / "home", "http://127.0.0.1:1/api"), "FLOOR_DATABASE_URL": database_url}
    sides = [create_floor.Bare("floor", tmp, env, True, database)]
    try:
        if writes is not None:
            sides.append(create_floor.Bare(
                "writes", tmp, {**env, "FLOOR_DATABASE_URL": writes.database_url, "FLOOR_BROKER_URL": broker_url,
                                **create_floor.write_texts(tmp, writes.texts)},
                True, writes.database, module="writesapp", deployment=writes.deployment_id))
        result: dict[str, Any] = {}
        for side in sides:
            measures.create_api(side, 50, 4, 10)
            found, _ = measures.create_api(side, sequential, clients, per_client)
            if side.label == "floor":
                result.update(found)
            else:
                result["writes"] = found
        return result
    finally:
        for side in sides:
            side.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class StartFloor:
    """bench/start_floor.py's bare app (``stack``: its server stack floor) with the methods
    ``measures.cold_starts`` calls. Each ``start_server`` is one ``start_floor.time_start``: exec ->
    first healthy answer (polled every 10 ms), then the process is stopped. The bare app makes no
    tables and the stack floor's one table is made by its first start: one figure for both starts."""

    def __init__(self, database_url: str, broker_url: str = "", *, stack: bool = False) -> None:
        self.label = "stack floor" if stack else "floor"
        self.module = "stackapp" if stack else "floorapp"
        self.tmp = Path(tempfile.mkdtemp(prefix="orch-cmp-start-floor-"))
        extra = start_floor.write_stack_app(self.tmp) if stack else {}
        if not stack:
            (self.tmp / "floorapp.py").write_text(start_floor.FLOOR_APP)
        self.env = {**base_env(self.tmp / "home", "http://127.0.0.1:1/api"), "FLOOR_DATABASE_URL": database_url,
                    "FLOOR_BROKER_URL": broker_url, **extra}
        self.server = None
        self.rss: list[float] = []  # MB, the process's RSS at its first healthy answer

    def fresh_database(self) -> None:
        """Nothing to empty: the app keeps no data."""

    def start_server(self) -> float:
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", f"{self.module}:app", "--port", str(port), "--log-level", "warning"]
        seconds, rss = start_floor.time_start(argv, self.env, port, self.tmp)
        self.rss.append(rss)
        return seconds

    def stop_process(self, proc: object) -> None:
        """``start_server`` has stopped it already."""

    def stop(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_database(database: str, redis_db: int) -> tuple[str, str]:
    """The (recreated) database the start floors' health routes read, and their broker."""
    return fresh_postgres(database, redis_db)


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
