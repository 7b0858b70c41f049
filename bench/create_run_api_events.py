"""Create-run API throughput with the flow-run events recorded vs not (issue 17: at most 10 % below).

Two servers of this checkout run side by side (``orch server start`` as a user starts it, through
``tests.harness.Stack``): one as shipped, one whose interpreter loads a ``sitecustomize`` that turns
the recording of flow-run events off (a new run's ``orchestrator.flow-run.Scheduled``, a state
change's; a bench-only switch: no setting of the product does this). Each round measures both, in turn (each side first in turn, the
other server SIGSTOPped meanwhile): ``--sequential`` POSTs one after the other, then ``--clients``
threads with one keep-alive connection each sending ``--per-client`` (bench/compare/measures.py
``create_api``, the figure bench/compare.py reports), on a deployment whose pool nobody serves.
Also the CPU seconds per run of the server's process tree and, on PostgreSQL, of the database's
backends (``/proc``): steadier than the wall clock on a shared machine. Medians over ``--rounds``;
the load average before and after.

Configs: ``postgres`` (databases ``hb2_bench_ev_on``/``_off`` recreated, Redis db 12 flushed; ``--database``
and ``--redis-db`` choose others) and
``embedded`` (a fresh ORCH_HOME each: SQLite + the SQLAlchemy broker).

Usage: PYTHONPATH=. python bench/create_run_api_events.py [--config postgres embedded] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # compare/ and skeleton.py
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout

from compare import measures
from compare.common import others_stopped, tree_pids
from compare.ours import OursSide, precompile

from tests.harness import PG_ADMIN

REDIS_DB = 12
DATABASE = "hb2_bench_ev"  # + _on / _off
# Loaded by the "off" server's interpreter at start: no flow-run event is built nor recorded, neither
# a new run's nor a state change's.
EVENTS_OFF = '''
import orchestrator.server.services.emitted as _emitted
import orchestrator.server.services.events as _events

_record = _events.record
_emitted.runs_created = lambda session, rows: []
_emitted.runs_created_rows = lambda session, rows: []  # PostgreSQL's writer builds the rows straight
_emitted.run_state_changed = lambda session, run: None
_events.record = lambda session, events: _record(session, [e for e in events if e is not None])
'''


class Bench(OursSide):
    """A server only (no worker): an ``idle`` process pool and a deployment on it."""

    def __init__(self, config: str, events: bool, *, database: str = DATABASE, redis_db: int = REDIS_DB) -> None:
        suffix = "on" if events else "off"
        super().__init__(config, database=f"{database}_{suffix}", redis_db=redis_db)
        self.label = f"{config} events {suffix}"
        # The runs pile up unserved: not named Late nor re-published while the bench runs (a Late
        # state is an event more with events on: rounds would measure the scheduler, not creates).
        self.env.update(ORCH_SCHEDULER_LATE_AFTER_SECONDS="86400", ORCH_DISPATCHER_REDISPATCH_SECONDS="86400")
        if not events:
            patch = self.tmp / "events_off"
            patch.mkdir()
            (patch / "sitecustomize.py").write_text(EVENTS_OFF)
            self.env["PYTHONPATH"] = os.pathsep.join([str(patch), self.env["PYTHONPATH"]])

    def setup(self) -> None:
        from orchestrator import schemas

        self.fresh_database()
        self.start_server()
        self.api.request("POST", "/work_pools", body={"name": "idle", "type": "process"})
        request = schemas.DeploymentCreate(flow_name="noop", name="idle", entrypoint="flows.py:noop",
                                           path=str(self.tmp), work_pool_name="idle", tags=["bench", "events"])
        self.deployments["idle"] = str(self.api.upsert_deployment(request).id)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process (``/proc/<pid>/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def side_pids(side: Bench) -> list[int]:
    """The server's process tree and, on PostgreSQL, the backends serving its database: the CPU a
    run costs, whatever the machine's other load does to the wall clock."""
    pids = tree_pids(side.server.pid) if side.server is not None else []
    if side.config == "postgres":
        query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{side.database}'"
        out = subprocess.run([*PG_ADMIN[:-1], "-tAc", query], capture_output=True, text=True, timeout=30, check=True).stdout
        pids += [int(line) for line in out.split()]
    return pids


def events_of(side: Bench) -> int:
    """Events stored (read from the database: the read API may not be merged)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(side.database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM events")).scalar_one())
    finally:
        engine.dispose()


def run_config(config: str, rounds: int, sequential: int, clients: int, per_client: int, *,
               database: str = DATABASE, redis_db: int = REDIS_DB) -> dict[str, Any]:
    sides = [Bench(config, True, database=database, redis_db=redis_db),
             Bench(config, False, database=database, redis_db=redis_db)]
    figures: dict[str, dict[str, list[float]]] = {s.label: {"sequential": [], "concurrent": [], "cpu_ms": []} for s in sides}
    errors = 0.0
    try:
        for side in sides:
            side.setup()
        # warm-up: the first requests pay imports, caches and the pool's connections
        for side in sides:
            measures.create_api(side, 20, 4, 5)
        for i in range(rounds):
            for side in measures.rotated(sides, i):
                before = cpu_seconds(side_pids(side))
                with others_stopped(sides, side):
                    result, _ = measures.create_api(side, sequential, clients, per_client)
                after = cpu_seconds(side_pids(side))
                used = sum(value - before.get(pid, 0.0) for pid, value in after.items())
                figures[side.label]["cpu_ms"].append(used / (sequential + clients * per_client) * 1000)
                errors += result["sequential_errors"] + result["concurrent_errors"]
                figures[side.label]["sequential"].append(result["sequential_per_s"])
                figures[side.label]["concurrent"].append(result["concurrent_per_s"])
                print(f"  round {i + 1} {side.label:22} sequential {result['sequential_per_s']:6.0f}/s  "
                      f"{clients} clients {result['concurrent_per_s']:6.0f}/s  CPU "
                      f"{figures[side.label]['cpu_ms'][-1]:5.2f} ms/run", flush=True)
        stored = {s.label: events_of(s) for s in sides}
    finally:
        for side in sides:
            side.stop()
    on, off = (figures[s.label] for s in sides)
    out: dict[str, Any] = {"errors": errors, "events stored": stored}
    for what in ("sequential", "concurrent", "cpu_ms"):
        m_on, m_off = statistics.median(on[what]), statistics.median(off[what])
        out[what] = {"on": m_on, "off": m_off, "change %": (m_on / m_off - 1) * 100}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", nargs="+", default=["postgres", "embedded"], choices=["postgres", "embedded"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=15)
    parser.add_argument("--database", default=DATABASE, help="PostgreSQL databases <name>_on / _off (recreated)")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB, help="Redis database (flushed)")
    args = parser.parse_args()
    precompile()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    began = time.perf_counter()
    for config in args.config:
        result = run_config(config, args.rounds, args.sequential, args.clients, args.per_client,
                            database=args.database, redis_db=args.redis_db)
        print(f"{config}: errors {result['errors']:.0f}, events stored {result['events stored']}")
        for what, unit in (("sequential", "runs/s"), ("concurrent", "runs/s"), ("cpu_ms", "ms CPU/run")):
            r = result[what]
            print(f"{config:9} {what:10} events on {r['on']:7.2f}  off {r['off']:7.2f} {unit:10}  "
                  f"change {r['change %']:+5.1f} %", flush=True)
    print(f"load average at end: {os.getloadavg()}, {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
