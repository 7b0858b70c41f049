"""Scheduler: N deployments with one interval schedule each (every hour) are written while no
scheduler runs; then the server starts, and we time process start -> every deployment has at least
3 SCHEDULED runs (both systems' default minimum; the default horizon is also >= 1 hour ahead, which
3 hourly runs meet). Progress is read straight from each system's database, read-only, every
``interval`` seconds, so the API's speed plays no part."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from compare.common import Side
from compare.ours import SCHED_DB, SCHED_REDIS, OursSide
from compare.ours import preload_schedules as preload_ours
from compare.prefect_side import PrefectSide
from compare.prefect_side import preload_schedules as preload_prefect

MIN_RUNS = 3
EVERY = 3600.0
QUERY = ("SELECT count(*) FROM (SELECT deployment_id FROM {table} WHERE state_type = 'SCHEDULED' "
         "GROUP BY deployment_id HAVING count(*) >= 3) AS t")


def sqlite_counter(path: str, table: str) -> Callable[[], int]:
    def count() -> int:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(connection.execute(QUERY.format(table=table)).fetchone()[0])
        finally:
            connection.close()

    return count


def postgres_counter(url: str) -> tuple[Callable[[], int], Callable[[], None]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text(QUERY.format(table="flow_runs"))).scalar_one())

    return count, engine.dispose


def timed_start(side: Side, count_scheduled: Callable[[], int], count: int, bound: float) -> dict[str, Any]:
    """Start the server; poll until ``count`` deployments have their runs ahead, at most ``bound`` s."""
    began = time.perf_counter()
    healthy = side.start_server()
    done = 0
    while True:
        try:
            done = count_scheduled()
        except (sqlite3.OperationalError, OSError):  # the writer holds the file for a moment
            pass
        elapsed = time.perf_counter() - began
        if done >= count:
            return {"seconds": elapsed, "after_health": elapsed - healthy, "health": healthy}
        if elapsed > bound:
            return {"seconds": float("inf"), "bound": bound, "done": done, "health": healthy}
        side.check_alive()
        time.sleep(0.05 if count <= 1000 else 0.25)


def measure_ours(config: str, count: int, bound: float, *, database: str = SCHED_DB,
                 redis_db: int = SCHED_REDIS) -> dict[str, Any]:
    side = OursSide(config, database=database, redis_db=redis_db)
    dispose: Callable[[], None] = lambda: None
    try:
        setup_began = time.perf_counter()
        preload_ours(side, count, EVERY)
        setup = time.perf_counter() - setup_began
        if config == "postgres":
            counter, dispose = postgres_counter(side.database_url)
        else:
            counter = sqlite_counter(str(side.home / "orchestrator.db"), "flow_runs")
        result = timed_start(side, counter, count, bound)
        return {**result, "setup": setup, "how": "services.deployments.upsert, server stopped"}
    finally:
        dispose()
        side.stop()


def measure_prefect(count: int, bound: float) -> dict[str, Any]:
    side = PrefectSide()
    try:
        setup = preload_prefect(side, count, EVERY)
        result = timed_start(side, sqlite_counter(str(side.database_file), "flow_run"), count, bound)
        return {**result, "setup": setup, "how": "POST /api/deployments/, scheduler service off"}
    finally:
        side.stop()
