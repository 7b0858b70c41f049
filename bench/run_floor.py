"""API create -> RUNNING / COMPLETED against the floor of its stack (issue 22: <= 20 / 50 ms p50 / p95,
COMPLETED <= 30 ms), one no-op run at a time, alternating with ours.

    python bench/run_floor.py [--runs 30] [--gap 0] [--database orch_bench_run_floor] [--redis-db 15]

``floor``: the least a run's path on this stack can cost with the same hops as ours -- a bare FastAPI +
uvicorn app (plain ``def`` routes on the thread pool, SQLAlchemy Core on PostgreSQL, redis-py) and a
bare worker process, both as subprocesses:

  POST /runs (INSERT, commit, LPUSH the id to Redis) -> the worker's BLPOP -> POST /runs/{id}/claim
  (UPDATE ... WHERE state = SCHEDULED, commit) -> ``os.fork()`` -> the child POSTs RUNNING (UPDATE with
  start_time, commit), then COMPLETED (end_time), and exits.

No flow is loaded, nothing is logged, no event is written, no lease or heartbeat is held, no job
template rendered, no process exec'd: each of those is something ours does for a reason, so the gap
between the two rows is what our features cost on the path, and the floor row is what no design on
this stack goes under. ``ours``: ``orch server start`` + ``orch worker start --limit 8`` as
bench/compare.py runs them (``compare.ours.OursSide``). Figures as bench/compare.py takes them
(``compare.measures.create_to_final``: POST sent, client clock -> the server's start_time / end_time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from compare import measures
from compare.common import NOT_YET, Side, parse_ts, wait_until
from compare.ours import OursSide, base_env, precompile

from tests.harness import fresh_postgres

FLOOR_SERVER = '''
import datetime as dt
import os
import uuid

import redis
from fastapi import Body, FastAPI, HTTPException
from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, create_engine, insert, select, update

engine = create_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=10, max_overflow=20)
broker = redis.Redis.from_url(os.environ["FLOOR_BROKER_URL"])
metadata = MetaData()
runs = Table("floor_path_runs", metadata, Column("id", Uuid, primary_key=True), Column("state", String(16)),
             Column("start_time", DateTime(timezone=True)), Column("end_time", DateTime(timezone=True)))
metadata.create_all(engine)
app = FastAPI()


@app.get("/api/health")
def health() -> dict:
    return {"ok": True}


@app.post("/api/runs", status_code=201)
def create() -> dict:
    run_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(insert(runs).values(id=run_id, state="SCHEDULED"))
    broker.lpush("floor:due", str(run_id))
    return {"id": str(run_id)}


@app.post("/api/runs/{run_id}/claim")
def claim(run_id: uuid.UUID) -> dict:
    with engine.begin() as connection:
        claimed = connection.execute(update(runs).where(runs.c.id == run_id, runs.c.state == "SCHEDULED")
                                     .values(state="PENDING").returning(runs.c.id)).first()
    if claimed is None:
        raise HTTPException(409, "not SCHEDULED")
    return {"id": str(run_id)}


@app.post("/api/runs/{run_id}/state")
def set_state(run_id: uuid.UUID, body: dict = Body(...)) -> dict:
    when = "start_time" if body["state"] == "RUNNING" else "end_time"
    with engine.begin() as connection:
        connection.execute(update(runs).where(runs.c.id == run_id)
                           .values(state=body["state"], **{when: dt.datetime.now(dt.UTC)}))
    return {"state": body["state"]}


@app.get("/api/runs/{run_id}")
def read(run_id: uuid.UUID) -> dict:
    with engine.connect() as connection:
        row = connection.execute(select(runs).where(runs.c.id == run_id)).one()
    return {"state": row.state, "start_time": row.start_time and row.start_time.isoformat(),
            "end_time": row.end_time and row.end_time.isoformat()}
'''

FLOOR_WORKER = '''
import http.client
import json
import os

import redis

broker = redis.Redis.from_url(os.environ["FLOOR_BROKER_URL"])
port = int(os.environ["FLOOR_PORT"])


def post(connection, path, body=None):
    for attempt in (1, 2):
        try:
            connection.request("POST", path, body=json.dumps(body or {}), headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            return answer.status
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # the server closed the idle keep-alive connection (uvicorn: after 5 s), as our client
            # expects too: the next request opens a new one
            connection.close()
            if attempt == 2:
                raise


server = http.client.HTTPConnection("127.0.0.1", port)
while True:
    while True:  # reap finished children
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    item = broker.blpop("floor:due", timeout=1)
    if item is None:
        continue
    run_id = item[1].decode()
    if post(server, f"/api/runs/{run_id}/claim") != 200:
        continue
    if os.fork() == 0:
        own = http.client.HTTPConnection("127.0.0.1", port)
        post(own, f"/api/runs/{run_id}/state", {"state": "RUNNING"})
        post(own, f"/api/runs/{run_id}/state", {"state": "COMPLETED"})
        os._exit(0)
'''


class FloorSide(Side):
    """The floor's server and worker (see the module's docstring) behind ``Side``'s methods."""

    label = "floor (FastAPI + SQLAlchemy + Redis + fork)"

    def __init__(self, database: str, redis_db: int) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="run-floor-"))
        super().__init__(tmp)
        (tmp / "floorserver.py").write_text(FLOOR_SERVER)
        (tmp / "floorworker.py").write_text(FLOOR_WORKER)
        database_url, broker_url = fresh_postgres(database, redis_db)
        self.env.update(base_env(tmp / "home", self.api_base), FLOOR_DATABASE_URL=database_url,
                        FLOOR_BROKER_URL=broker_url, FLOOR_PORT=str(self.port))

    def server_argv(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "floorserver:app", "--port", str(self.port), "--log-level",
                "warning", "--no-access-log"]

    def setup(self) -> None:
        self.server = self.spawn("server", self.server_argv(), cwd=self.tmp)
        wait_until("floor server health", self.healthy, 60, 0.05, alive=self.check_alive, ignore=NOT_YET)
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = self.spawn("worker", [sys.executable, "floorworker.py"], cwd=self.tmp)

    def create_run(self, deployment: str, *, strict: bool = False) -> str:
        return str(self.api.request("POST", "/runs", body={})["id"])

    def read_run(self, run_id: str) -> dict[str, Any]:
        run = self.api.request("GET", f"/runs/{run_id}")
        return {"state": run["state"], "start": parse_ts(run["start_time"]), "end": parse_ts(run["end_time"]),
                "pid": None}


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database", default="orch_bench_run_floor", help="PostgreSQL database (recreated)")
    parser.add_argument("--redis-db", type=int, default=15, help="Redis database (flushed); ours uses the next one")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds idle before each run (bench/compare.py's runs come after several)")
    args = parser.parse_args()
    precompile()
    sides: list[Side] = [FloorSide(args.database, args.redis_db),
                         OursSide("postgres", database=f"{args.database}_ours", redis_db=args.redis_db + 1)]
    try:
        for side in sides:
            side.setup()
        figures = measures.create_to_final(sides, args.runs, warmup=3, gap=args.gap, cpu=True)
    finally:
        for side in sides:
            side.stop()
    print(f"{args.runs} no-op runs one at a time, alternating, {args.gap:g} s idle before each; ms from POST sent to "
          "the server's start_time / end_time; CPU: the side's processes (server, worker, flow-run processes) a run, "
          "from POST sent to the final state read (the client's polls included)")
    print(f"{'':48} {'RUNNING p50':>12} {'p95':>7} {'COMPLETED p50':>14} {'p95':>7} {'CPU ms/run':>11}")
    for side in sides:
        running, completed = figures[side.label]["running"], figures[side.label]["completed"]
        cpu = statistics.mean(figures[side.label]["cpu"]) * 1000
        print(f"{side.label:48} {statistics.median(running) * 1000:12.1f} {p(running, 0.95):7.1f} "
              f"{statistics.median(completed) * 1000:14.1f} {p(completed, 0.95):7.1f} {cpu:11.1f}")


if __name__ == "__main__":
    main()
