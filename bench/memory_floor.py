"""Idle memory of our server and worker tree against the floor of the stack (issue 22), per process.

    python bench/memory_floor.py [--code PATH]... [--rounds 2] [--runs 10] [--settle 5]
                                 [--database orch_h4_memory] [--redis-db 10] [--profile DIR]
                                 [--no-floor] [--env NAME=VALUE]...

Floors, each idle ``--settle`` seconds after its load, then ``/proc/PID/smaps_rollup``:

* **server floor**: a bare FastAPI + uvicorn + SQLAlchemy + psycopg app (``FLOOR_SERVER``) with a pool
  of one PostgreSQL connection used once (``SELECT 1``) and one LPUSH to Redis on a bare socket (ours
  speaks RESP itself and never loads redis-py, ~7 MB, so neither does its floor), both at the first
  request, as our server has used its database and published a run when bench/compare.py reads its RSS;
* **server stack floor** (a server floor of the project's stack, not only FastAPI's): the same app, which
  also reads a pydantic-settings ``BaseSettings`` of a dozen fields from its environment (house style:
  every ``orch`` process has its settings so) and uses the SQLAlchemy ORM as any ORM app of this
  stack must: a declarative ``Base``, one small mapped table (created at start), a ``Session`` per
  request (health reads the table, the publish request adds a row and commits) -- not our schema,
  not our code;
* **worker floor**: a bare Celery worker with the options ours runs with, started as ours is
  (``FLOOR_WORKER``: ``app.Worker(...).start()``, thread pool, concurrency 8, gossip/mingle/heartbeat
  off, ``optimization="fair"``, prefetch 1, JSON, no results, the Redis transport options of
  pools/broker.py) that has run one task, plus its idle fork server: a
  bare interpreter it started with a socket, that has forked one child for the task (the child ended),
  as ours keeps one;
* **stack floor** (a worker floor of the project's stack, not only Celery's): the same worker, which also
  reads a pydantic-settings ``BaseSettings`` of a dozen fields from its environment (house style: every
  ``orch`` process has its settings so), and whose fork server has imported pydantic and validated one
  ``BaseModel`` once (every run validates its parameters with pydantic) before it serves.

Ours, for each checkout (``--code``, repeatable; default this one), alternating: ``orch server start`` +
``orch worker start --limit 8`` on PostgreSQL + Redis (``compare.ours.OursSide``, as bench/compare.py
starts them), ``--runs`` no-op runs one at a time, idle, then the server process and every process of
the worker's tree. Figures: RSS (bench/compare.py's measure; summed over a tree, a page shared by two
processes counts twice), PSS (a page shared by N processes counts 1/N in each) and private
(``Private_Clean + Private_Dirty``), MB.

``--profile DIR``: every process started (floors and ours) traces its Python allocations from its
first import (bench/memory_profile/sitecustomize.py) and, once idle, writes DIR/<name>.<pid>.txt:
live allocations and modules grouped by package, and .types: the collector's objects by type. Tracing
costs memory itself: figures taken with ``--profile`` are not the ones to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from compare import measures
from compare.common import tree_pids
from compare.ours import OursSide, precompile
from worker_memory import command_of, rollup

from tests.harness import clean_env, free_port, fresh_postgres, wait_until

PROFILE_PATH = BENCH / "memory_profile"

FLOOR_SERVER = '''
import os
import socket
import urllib.parse

from fastapi import FastAPI
from sqlalchemy import create_engine, text

app = FastAPI()

if not os.environ.get("FLOOR_STACK"):  # the bare server floor: SQLAlchemy Core, one SELECT 1
    engine = create_engine(os.environ["FLOOR_DATABASE_URL"], pool_size=1)

    @app.get("/api/health")
    def health() -> dict[str, bool]:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"ok": True}

    def record() -> None:
        """Nothing: the bare floor writes no row."""

else:  # the server stack floor: settings as the house style reads them, the ORM as any ORM app uses it
    import datetime as dt
    import uuid

    from pydantic import Field
    from pydantic_settings import BaseSettings, SettingsConfigDict
    from sqlalchemy import DateTime, String, func, select
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

    class FloorSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="FLOOR_", extra="ignore")

        database_url: str = Field(description="the database")
        broker_url: str = Field(description="the broker")
        host: str = "127.0.0.1"
        port: int = Field(4300, ge=1, le=65535)
        home: str = "~/.floor"
        api_key: str | None = None
        processes: int = Field(1, ge=1)
        pool_size: int = Field(1, ge=1)
        log_level: str = "warning"
        heartbeat_seconds: float = 10.0
        reaper_seconds: float = 5.0
        ui: bool = True

    settings = FloorSettings()
    engine = create_engine(settings.database_url, pool_size=settings.pool_size)

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "floor_items"

        id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
        name: Mapped[str] = mapped_column(String(100))
        created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    Base.metadata.create_all(engine)

    @app.get("/api/health")
    def health() -> dict[str, bool]:
        with Session(engine) as session:  # a session per request, as every route of an ORM app has
            session.scalars(select(Item).limit(1)).all()
        return {"ok": True}

    def record() -> None:
        with Session(engine) as session:
            session.add(Item(name="floor"))
            session.commit()


def command(*words: str) -> bytes:
    """One command in RESP, Redis' protocol."""
    return f"*{len(words)}\\r\\n".encode() + b"".join(
        f"${len(word.encode())}\\r\\n{word}\\r\\n".encode() for word in words)


@app.post("/api/publish")
def publish() -> dict[str, bool]:
    record()
    address = urllib.parse.urlsplit(os.environ["FLOOR_BROKER_URL"])  # redis://host:port/db
    with socket.create_connection((address.hostname, address.port or 6379), timeout=5) as broker:
        broker.sendall(command("SELECT", address.path.strip("/") or "0") + command("LPUSH", "floor", "x"))
        answers = b""
        while answers.count(b"\\r\\n") < 2:
            answers += broker.recv(64)
    if not answers.startswith(b"+OK\\r\\n:"):
        raise RuntimeError(f"the broker refused: {answers!r}")
    return {"ok": True}
'''

FLOOR_WORKER = '''
import os
import socket
import subprocess
import sys

from celery import Celery

app = Celery("floor", broker=os.environ["FLOOR_BROKER_URL"], set_as_current=False)
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True, task_acks_late=False,
                worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
                broker_transport_options={"queue_order_strategy": "priority", "visibility_timeout": 3600,
                                          "socket_connect_timeout": 5, "socket_timeout": 10})

# The fork server's floor: a bare interpreter holding a socket, forking a child per order.
FORK_SERVER = """
import os, socket
channel = socket.socket(fileno=0)
while channel.recv(16):
    if os.fork() == 0:
        os._exit(0)
    os.wait()
"""
if os.environ.get("FLOOR_STACK"):  # the stack floor: settings as ours reads them, a fork server with pydantic
    from pydantic import Field
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class FloorSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="FLOOR_", extra="ignore")

        broker_url: str = Field(description="the broker")
        api_url: str = "http://127.0.0.1:4300/api"
        api_key: str | None = None
        done: str | None = None
        name: str = "floor"
        queue: str = "floor"
        limit: int = Field(8, ge=1)
        heartbeat_seconds: float = 10.0
        cancel_grace_seconds: float = 10.0
        client_timeout_seconds: float = 30.0
        prewarm: bool = True
        home: str = "~/.floor"

    FloorSettings()
    FORK_SERVER = """
from pydantic import BaseModel

class Parameters(BaseModel):
    name: str
    count: int = 1
    ratio: float = 0.5
    tags: list[str] = []

Parameters.model_validate({"name": "floor", "count": 2, "tags": ["a"]})
""" + FORK_SERVER
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
fork_server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=theirs)
theirs.close()


@app.task(name="floor.run")
def run() -> None:
    ours.send(b"fork")
    with open(os.environ["FLOOR_DONE"], "w") as done:
        done.write("ran")


if __name__ == "__main__":  # started as workers/celery_worker.py starts ours: no Celery CLI (click-repl and
    # prompt_toolkit, ~115 modules, that ``celery worker`` loads and ours does not)
    app.Worker(queues=["floor"], concurrency=8, pool="threads", loglevel="WARNING", quiet=True, without_gossip=True,
               without_mingle=True, without_heartbeat=True, optimization="fair").start()
'''


def http_ok(port: int, method: str, path: str) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request(method, path)
        return connection.getresponse().status == 200
    except OSError:
        return False


def memory_of(pids: list[int], profile: Path | None) -> list[dict[str, Any]]:
    if profile is not None:  # each process writes its own allocations' profile
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGUSR2)
        time.sleep(3)
    out = []
    for pid in pids:
        with contextlib.suppress(OSError, KeyError):
            out.append({"pid": pid, "command": command_of(pid), **rollup(pid)})
    return out


def profile_env(env: dict[str, str], profile: Path | None, name: str) -> dict[str, str]:
    if profile is None:
        return env
    return {**env, "ORCH_BENCH_TRACEMALLOC": str(profile / name),
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROFILE_PATH), env.get("PYTHONPATH", "")) if p)}


def floor_server(args: argparse.Namespace, tmp: Path, stack: bool = False) -> list[dict[str, Any]]:
    """The bare server floor; with ``stack``, the server stack floor (settings, the ORM)."""
    (tmp / "floorserver.py").write_text(FLOOR_SERVER)
    database_url, broker_url = fresh_postgres(args.database, args.redis_db)
    port = free_port()
    env = profile_env({**clean_env(("ORCH_",)), "PYTHONPATH": str(tmp), "FLOOR_DATABASE_URL": database_url,
                       "FLOOR_BROKER_URL": broker_url, **({"FLOOR_STACK": "1"} if stack else {})},
                      args.profile, "server-stack-floor" if stack else "floor-server")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "floorserver:app", "--port", str(port),
                             "--log-level", "warning"], env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until("floor server health", lambda: http_ok(port, "GET", "/api/health"), 60, interval=0.05,
                   ignore=(OSError,))
        if not http_ok(port, "POST", "/api/publish"):
            raise RuntimeError("floor server: publish failed")
        time.sleep(args.settle)
        return memory_of([proc.pid], args.profile)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def floor_worker(args: argparse.Namespace, tmp: Path, stack: bool = False) -> list[dict[str, Any]]:
    """The bare Celery worker's tree; with ``stack``, the stack floor's (settings and pydantic)."""
    (tmp / "floorworker.py").write_text(FLOOR_WORKER)
    _, broker_url = fresh_postgres(args.database, args.redis_db)
    done = tmp / "done"
    done.unlink(missing_ok=True)
    env = profile_env({**clean_env(("ORCH_",)), "PYTHONPATH": str(tmp), "FLOOR_BROKER_URL": broker_url,
                       "FLOOR_DONE": str(done), **({"FLOOR_STACK": "1"} if stack else {})},
                      args.profile, "stack-floor-worker" if stack else "floor-worker")
    proc = subprocess.Popen([sys.executable, "floorworker.py"], env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        from celery import Celery

        sender = Celery("floor-sender", broker=broker_url, set_as_current=False)
        sender.send_task("floor.run", queue="floor")
        wait_until("the floor worker's task", done.exists, 60, interval=0.05)
        time.sleep(args.settle)
        return memory_of(tree_pids(proc.pid), args.profile)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ours(code: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    side.env["PYTHONPATH"] = str(code)
    side.env.update(profile_env(side.env, args.profile, f"ours-{code.name}"))
    side.env.update(kv.split("=", 1) for kv in args.env)
    try:
        side.setup()
        measures.create_to_final([side], args.runs)
        time.sleep(args.settle)
        assert side.server is not None and side.worker is not None
        return {"server": memory_of([side.server.pid], args.profile),
                "worker": memory_of(tree_pids(side.worker.pid), args.profile)}
    finally:
        side.stop()


def show(label: str, processes: list[dict[str, Any]]) -> dict[str, float]:
    total = {key: sum(p[key] for p in processes) for key in ("rss", "pss", "private")}
    for p in processes:
        print(f"    {p['pid']:>7} RSS {p['rss']:6.1f}  PSS {p['pss']:6.1f}  private {p['private']:6.1f} MB  "
              f"{p['command']}", flush=True)
    print(f"  {label}: RSS {total['rss']:.1f}  PSS {total['pss']:.1f}  private {total['private']:.1f} MB", flush=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, action="append", help="a checkout to measure (repeatable)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--database", default="orch_h4_memory")
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument("--profile", type=Path, help="write each process's allocation profile into this folder")
    parser.add_argument("--no-floor", action="store_true", help="ours only")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in our server's and worker's environment (e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    precompile()
    codes = [c.resolve() for c in args.code or [BENCH.parent]]
    for code in codes:  # each checkout byte-compiled, as an installed package is
        precompile(code)
    tmp = Path(tempfile.mkdtemp(prefix="memory-floor-"))
    figures: dict[str, list[dict[str, float]]] = {}
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for i in range(args.rounds):
        runs: list[tuple[str, Any]] = [] if args.no_floor else [
            ("server floor", lambda: floor_server(args, tmp)),
            ("server stack floor", lambda: floor_server(args, tmp, stack=True)),
            ("worker floor", lambda: floor_worker(args, tmp)),
            ("stack floor", lambda: floor_worker(args, tmp, stack=True))]
        for code in codes[i % len(codes):] + codes[:i % len(codes)]:
            runs.append((str(code), lambda c=code: ours(c, args)))
        for label, measure in runs:
            result = measure()
            print(f"round {i + 1} {label} (load {os.getloadavg()[0]:.2f})", flush=True)
            parts = result if isinstance(result, dict) else {"": result}
            for part, processes in parts.items():
                name = f"{label} {part}".strip()
                figures.setdefault(name, []).append(show(name, processes))
    print("medians:")
    for name, rounds in figures.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in ("rss", "pss", "private")}
        print(f"  {name}: RSS {med['rss']:.1f}  PSS {med['pss']:.1f}  private {med['private']:.1f} MB "
              f"({len(rounds)} rounds)")


if __name__ == "__main__":
    main()
