"""The create-run API against the floor of its stack (issue 22: >= 800 runs/s one client, >= 1,500 with 20).

    python bench/create_floor.py [--rounds 5] [--database h2_bench_floor] [--redis-db 4] [--processes 2]
                                 [--many-redis-db 5]

Three servers on one PostgreSQL database (recreated) and one Redis database (flushed), each as a
user would run it, answering ``POST /api/deployments/{id}/runs``; measured in turn, round after
round, with the same client (``orchestrator.client``: one keep-alive connection per thread, the
client bench/compare.py uses), ``--sequential`` POSTs one after the other, then ``--clients``
threads sending ``--per-client`` each (``bench/compare/measures.create_api``):

* ``http``: a bare FastAPI + uvicorn app (the options ``orch server start`` gives uvicorn) whose
  route reads the JSON body and answers 201 with an id: no database. What the web stack costs.
* ``floor``: the same app, its route a plain ``def`` (run on the thread pool, as ours) doing one
  SQLAlchemy Core INSERT of a row (id, deployment, name, state, times) and its commit, on an engine
  sized as ours. The least any create-run API on FastAPI + SQLAlchemy + PostgreSQL pays.
* ``writes``: the same bare app, writing what ours writes and nothing else: ours' own statement
  (``new_runs._postgres_sql``: the run, its first state, its event and the event's related
  resources, in one statement in autocommit) on ours' database, its two JSON documents filled per
  request into texts taken from a run ours created (new ids, name and times), then one LPUSH of a
  message of ours' size to Redis, in RESP on a kept socket (as ours, no client library). No target read or check, no Python of ours: what the
  rows a create stores cost this stack, the least any create-run API storing them pays.
* ``ours``: ``orch server start`` (events on), a deployment on a pool nobody serves: the run, its
  state, its event and related rows, the broker publish, the hub announcement, the checks. Its runs
  are neither named Late nor re-published while the bench runs (both a day away): rounds minutes
  apart would otherwise measure the scheduler and the dispatcher working through the earlier ones.
* ``ours xN`` (``--processes N``, default 2; 1 leaves it out): the same with ``ORCH_SERVER_PROCESSES=N``,
  N API processes on the one port, on a database of its own (``<database>_pN_on``).

Also the CPU per request of the server's process tree and of the PostgreSQL backends serving the
database (``/proc``; steadier than the wall clock on a shared machine). Medians over the rounds;
the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))  # this checkout

from compare import measures
from compare.common import NOT_YET, tree_pids, wait_until
from compare.ours import base_env, fresh_postgres, precompile
from create_run_api_events import Bench, cpu_seconds

from orchestrator.client import Client
from tests.harness import PG_ADMIN, free_port

FLOOR_APP = '''
import datetime as dt
import os
import uuid

from fastapi import Body, FastAPI, Response
from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, create_engine, insert

engine = create_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=10, max_overflow=20)
metadata = MetaData()
runs = Table("floor_runs", metadata, Column("id", Uuid, primary_key=True), Column("deployment_id", Uuid),
             Column("name", String(255)), Column("state_type", String(16)),
             Column("expected_start_time", DateTime(timezone=True)), Column("created", DateTime(timezone=True)))
metadata.create_all(engine)
app = FastAPI()


@app.get("/api/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/api/deployments/{deployment_id}/runs", status_code=201)
def create(deployment_id: uuid.UUID, body: dict = Body(...)) -> Response:
    now = dt.datetime.now(dt.timezone.utc)
    run_id = uuid.uuid4()
    if os.environ.get("FLOOR_DATABASE") == "1":
        with engine.begin() as connection:
            connection.execute(insert(runs), {"id": run_id, "deployment_id": deployment_id, "name": "bare-run",
                                              "state_type": "SCHEDULED", "expected_start_time": now, "created": now})
    return Response(f'{{"id": "{run_id}"}}', status_code=201, media_type="application/json")
'''


WRITES_APP = '''
import datetime as dt
import os
import socket
import threading
import urllib.parse
import uuid

from fastapi import Body, FastAPI, Response
from sqlalchemy import create_engine

# Autocommit, as ours writes a create: its one statement is its transaction.
engine = create_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=10, max_overflow=20, isolation_level="AUTOCOMMIT")
STATEMENT, ROWS, EVENTS, MESSAGE = (open(os.environ[f"FLOOR_{name}"]).read()
                                    for name in ("STATEMENT", "ROWS", "EVENTS", "MESSAGE"))
BROKER = urllib.parse.urlsplit(os.environ["FLOOR_BROKER_URL"])  # redis://host:port/db
kept = threading.local()  # a connection per thread of the pool, kept


def command(*words: str) -> bytes:
    """One command in RESP, Redis' protocol: the least a client can send (ours speaks it itself too)."""
    return f"*{len(words)}\\r\\n".encode() + b"".join(
        f"${len(word.encode())}\\r\\n{word}\\r\\n".encode() for word in words)


def lpush(key: str, value: str) -> None:
    broker = getattr(kept, "broker", None)
    if broker is None:
        broker = kept.broker = socket.create_connection((BROKER.hostname, BROKER.port or 6379), timeout=10)
        broker.sendall(command("SELECT", BROKER.path.strip("/") or "0"))
        if broker.recv(64) != b"+OK\\r\\n":
            raise RuntimeError("the broker refused SELECT")
    broker.sendall(command("LPUSH", key, value))
    if not broker.recv(64).startswith(b":"):
        raise RuntimeError("the broker refused LPUSH")


app = FastAPI()


@app.get("/api/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/api/deployments/{deployment_id}/runs", status_code=201)
def create(deployment_id: uuid.UUID, body: dict = Body(...)) -> Response:
    run_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    now, name = dt.datetime.now(dt.timezone.utc).isoformat(), f"floor-{run_id[:8]}"
    fill = {"@ID@": run_id, "@EID@": event_id, "@NAME@": name, "@T@": now}
    rows, events = ROWS, EVENTS
    for mark, value in fill.items():
        rows, events = rows.replace(mark, value), events.replace(mark, value)
    with engine.connect() as connection:
        connection.exec_driver_sql(STATEMENT, {"rows": rows, "events": events})  # answers its count alone
    lpush("floor", MESSAGE.replace("@ID@", run_id))
    return Response(f'{{"id": "{run_id}"}}', status_code=201, media_type="application/json")
'''

# The marks ``WRITES_APP`` fills in: a run's id, its event's, its name and its times.
_RUN_TIMES = ("state_timestamp", "expected_start_time", "dispatched_at", "created", "updated")


def writes_texts(database_url: str, deployment_id: str) -> dict[str, str]:
    """The ``writes`` floor's statement and texts, from ours' newest run of ``deployment_id`` on
    ours' database (ours must have created one), by the name ``WRITES_APP`` reads each one's file
    from (``write_texts``)."""
    from pydantic_core import to_json
    from sqlalchemy import create_engine, text
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    from orchestrator.server.services import new_runs
    from pools.publish import task_message

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            run = dict(connection.execute(text(
                "SELECT * FROM flow_runs WHERE deployment_id = :d ORDER BY created DESC LIMIT 1"),
                {"d": deployment_id}).mappings().one())
            event = dict(connection.execute(text(
                "SELECT id, occurred, received, event, resource_id, resource, related, payload, follows FROM events "
                "WHERE resource_id = :r"), {"r": f"orchestrator.flow-run.{run['id']}"}).mappings().one())
    finally:
        engine.dispose()
    run_id, name = str(run["id"]), run["name"]
    run.update({"id": "@ID@", "name": "@NAME@"}, **{column: "@T@" for column in _RUN_TIMES if run[column] is not None})
    event.update(id="@EID@", occurred="@T@", received="@T@", resource_id=event["resource_id"].replace(run_id, "@ID@"),
                 resource={key: value.replace(run_id, "@ID@").replace(name, "@NAME@")
                           for key, value in event["resource"].items()})
    return {"FLOOR_STATEMENT": new_runs._postgres_sql(PGDialect_psycopg(), False, counted=True),  # a run without a key
            "FLOOR_ROWS": to_json([run]).decode(), "FLOOR_EVENTS": to_json([event]).decode(),
            "FLOOR_MESSAGE": task_message("floor", uuid.UUID(int=0), origin="1@floor").replace(
                str(uuid.UUID(int=0)), "@ID@")}


def write_texts(folder: Path, texts: dict[str, str]) -> dict[str, str]:
    """``writes_texts`` as files in ``folder``: the environment that names them for ``WRITES_APP``."""
    for name, text in texts.items():
        (folder / name).write_text(text)
    return {name: str(folder / name) for name in texts}


class Bare:
    """A bare FastAPI app under uvicorn, with the duck type ``measures.create_api`` drives: ``module``
    ``floorapp`` (``FLOOR_APP``) or ``writesapp`` (``WRITES_APP``, its deployment ``deployment``)."""

    def __init__(self, label: str, tmp: Path, env: dict[str, str], database: bool, database_name: str, *,
                 module: str = "floorapp", deployment: str | None = None) -> None:
        self.label, self.config, self.database = label, "postgres", database_name
        self.port = free_port()
        self.api = self.strict_api = Client(f"http://127.0.0.1:{self.port}/api", timeout=60.0)
        self.deployments = {"idle": deployment or str(uuid.uuid4())}
        argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(self.port), "--log-level", "warning",
                "--no-access-log", "--ws", "none", "--timeout-keep-alive", "75"]
        self.server = subprocess.Popen(argv, cwd=tmp, env={**env, "FLOOR_DATABASE": "1" if database else "0"},
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(f"{label} health", lambda: self.api.request("GET", "/health", timeout=2) is not None, 60,
                   interval=0.05, ignore=NOT_YET)

    def create_run(self, deployment: str, *, strict: bool = False) -> str:
        return str(self.api.request("POST", f"/deployments/{self.deployments[deployment]}/runs", body={})["id"])

    def stop(self) -> None:
        self.api.close()
        self.server.terminate()
        self.server.wait(timeout=30)


def pids_of(side: Any, database: str) -> list[int]:
    pids = tree_pids(side.server.pid)
    query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'"
    for attempt in range(20):  # other benches on the machine may hold every connection a moment
        done = subprocess.run([*PG_ADMIN[:-1], "-tAc", query], check=False, capture_output=True, text=True, timeout=30)
        if done.returncode == 0 or attempt == 19:
            done.check_returncode()
            return pids + [int(line) for line in done.stdout.split()]
        time.sleep(0.5)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=25)
    parser.add_argument("--database", default="orch_bench_floor", help="PostgreSQL database (recreated)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database (flushed)")
    parser.add_argument("--processes", type=int, default=2, help="API processes of the 'ours xN' side (1: none)")
    parser.add_argument("--many-redis-db", type=int, default=None,
                        help="Redis database of the 'ours xN' side (default: --redis-db + 1; the same one works: "
                             "it is flushed when that side starts, before any round)")
    parser.add_argument("--split-cpu", action="store_true",
                        help="also the CPU per request of the sequential and the concurrent phase apart")
    args = parser.parse_args()
    precompile()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="create-floor-"))
    (tmp / "floorapp.py").write_text(FLOOR_APP)
    # ours on <database>_on (Bench's naming); the bare apps on <database>
    database_url, _ = fresh_postgres(args.database, args.redis_db)
    env = {**base_env(tmp / "home", "http://127.0.0.1:1/api"), "FLOOR_DATABASE_URL": database_url}
    ours = Bench("postgres", True, database=args.database, redis_db=args.redis_db)
    # The runs created pile up unserved: not named Late nor re-published during the bench (each
    # would be a state change or a publish per run, minutes into it), so every round measures creates.
    ours.env.update(ORCH_SCHEDULER_LATE_AFTER_SECONDS="86400", ORCH_DISPATCHER_REDISPATCH_SECONDS="86400")
    many = None
    if args.processes > 1:  # its own database and Redis db: its runs do not pile onto ours'
        many_redis_db = args.redis_db + 1 if args.many_redis_db is None else args.many_redis_db
        many = Bench("postgres", True, database=f"{args.database}_p{args.processes}", redis_db=many_redis_db)
        many.env.update(ORCH_SCHEDULER_LATE_AFTER_SECONDS="86400", ORCH_DISPATCHER_REDISPATCH_SECONDS="86400",
                        ORCH_SERVER_PROCESSES=str(args.processes))
    sides: list[Any] = []
    try:
        ours.setup()
        ours.label = "ours"
        ours.create_run("idle")  # the run whose rows the writes floor's texts are made from
        writes_env = {**env, "FLOOR_DATABASE_URL": ours.database_url, "FLOOR_BROKER_URL": ours.env["ORCH_BROKER_URL"],
                      **write_texts(tmp, writes_texts(ours.database_url, ours.deployments["idle"]))}
        (tmp / "writesapp.py").write_text(WRITES_APP)
        sides = [Bare("http", tmp, env, False, args.database), Bare("floor", tmp, env, True, args.database),
                 Bare("writes", tmp, writes_env, True, ours.database, module="writesapp",
                      deployment=ours.deployments["idle"]), ours]
        if many is not None:
            many.setup()
            many.label = f"ours x{args.processes}"
            sides.append(many)
        for side in sides:  # warm-up: imports, caches, the pool's connections
            measures.create_api(side, 50, 4, 10)
        figures: dict[str, dict[str, list[float]]] = {s.label: {"sequential": [], "concurrent": [], "cpu_ms": []}
                                                      for s in sides}
        errors = 0.0
        for i in range(args.rounds):
            for side in measures.rotated(sides, i):
                database = side.database
                before = cpu_seconds(pids_of(side, database))
                if args.split_cpu:  # the two phases apart, the CPU read between them
                    result, _ = measures.create_api(side, args.sequential, 1, 0)
                    middle = cpu_seconds(pids_of(side, database))
                    concurrent, _ = measures.create_api(side, 0, args.clients, args.per_client)
                    result.update({key: value for key, value in concurrent.items() if key.startswith("concurrent")},
                                  error_samples=result["error_samples"] + concurrent["error_samples"])
                    split = (sum(v - before.get(pid, 0.0) for pid, v in middle.items()) / args.sequential * 1000,
                             sum(v - middle.get(pid, 0.0) for pid, v in cpu_seconds(pids_of(side, database)).items())
                             / (args.clients * args.per_client) * 1000)
                else:
                    result, _ = measures.create_api(side, args.sequential, args.clients, args.per_client)
                after = cpu_seconds(pids_of(side, database))
                used = sum(value - before.get(pid, 0.0) for pid, value in after.items())
                count = args.sequential + args.clients * args.per_client
                errors += result["sequential_errors"] + result["concurrent_errors"]
                if result["error_samples"]:  # say which side failed and how (a full database, a bug...)
                    print(f"  {side.label} errors: {result['error_samples']}", flush=True)
                row = figures[side.label]
                row["sequential"].append(result["sequential_per_s"])
                row["concurrent"].append(result["concurrent_per_s"])
                row["cpu_ms"].append(used / count * 1000)
                print(f"  round {i + 1} {side.label:7} sequential {result['sequential_per_s']:6.0f}/s  {args.clients} "
                      f"clients {result['concurrent_per_s']:6.0f}/s  CPU (server + database) "
                      f"{row['cpu_ms'][-1]:5.2f} ms/request"
                      + (f" (sequential {split[0]:5.2f}, concurrent {split[1]:5.2f})" if args.split_cpu else "")
                      + f"  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for side in sides:
            side.stop()
        for bench in (ours, many):
            if bench is not None and bench not in sides:
                bench.stop()
    print(f"errors {errors:.0f}; medians of {args.rounds} rounds:")
    for label, row in figures.items():
        print(f"  {label:7} sequential {statistics.median(row['sequential']):6.0f}/s  {args.clients} clients "
              f"{statistics.median(row['concurrent']):6.0f}/s  CPU {statistics.median(row['cpu_ms']):5.2f} ms/request")
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
