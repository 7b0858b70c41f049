"""Server start and idle memory against the floor of the stack: exec → first healthy answer, alternating.

    python bench/start_floor.py [--rounds 7] [--config embedded|postgres|both] [--code PATH]...
                                [--database orch_bench_floor] [--redis-db 12]

"floor" is a bare FastAPI + SQLAlchemy + uvicorn app with one health route running ``SELECT 1`` (what
any server on this stack pays before it has any code of its own); "stack floor" is the server stack
floor (``STACK_APP``: bench/memory_floor.py's server stack floor app, started): the same with what
every server of this stack has besides -- its settings read by pydantic-settings, the SQLAlchemy ORM
(a declarative Base, one mapped table made if missing, a Session per request), the broker reached at
start -- and the start's garbage collector held off as ``orch server start`` holds it; "ours" is
``orch server start`` on a database it has already migrated (a restart); with ``--code`` (repeatable),
ours of each checkout in turn (its code first on PYTHONPATH). All answer the same request,
polled every 10 ms, and are started in turn so that machine load hits them alike. Prints medians and each round's figures,
and each one's RSS right after its first healthy answer. For the worker, the floor is a bare Celery
worker (thread pool, one no-op task) on the same broker: its RSS once ready and idle for 2 s.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare.common import NOT_YET, tree_rss_mb, wait_until
from compare.ours import ORCH, base_env, fresh_postgres, precompile

from tests.harness import free_port

FLOOR_APP = '''
import os
from fastapi import FastAPI
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["FLOOR_DATABASE_URL"])
app = FastAPI()


@app.get("/api/health")
def health() -> dict[str, bool]:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"ok": True}
'''


STACK_APP = '''
import gc

gc.disable()  # as orch server start: what the imports make is not scanned while it starts

import socket
import urllib.parse

import floorserver  # bench/memory_floor.py's server stack floor (FLOOR_STACK=1): settings, the ORM, its table

app = floorserver.app
broker_url = floorserver.settings.broker_url
if broker_url.startswith("redis://"):  # the broker reached, as a server checks it at start: a bare PING
    address = urllib.parse.urlsplit(broker_url)  # on a socket, the least a client can send
    with socket.create_connection((address.hostname, address.port or 6379), timeout=5) as broker:
        broker.sendall(b"PING\\r\\n")
        if not broker.recv(64).startswith(b"+PONG"):
            raise RuntimeError("the broker did not answer PING")
gc.freeze()
gc.enable()
'''


def write_stack_app(folder: Path) -> dict[str, str]:
    """``STACK_APP`` as ``stackapp`` in ``folder``, with the memory floor's server it imports; the
    environment it needs beside the database's and the broker's URLs."""
    from memory_floor import FLOOR_SERVER

    (folder / "floorserver.py").write_text(FLOOR_SERVER)
    (folder / "stackapp.py").write_text(STACK_APP)
    return {"FLOOR_STACK": "1"}


FLOOR_WORKER = '''
import os
from celery import Celery

app = Celery("floor", broker=os.environ["FLOOR_BROKER_URL"])


@app.task
def noop() -> None:
    pass
'''


def healthy(port: int, timeout: float = 1.0) -> bool:
    """One health request (``timeout``: how long its answer is waited for): answered 200."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", "/api/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def time_start(argv: list[str], env: dict[str, str], port: int, cwd: Path) -> tuple[float, float]:
    """Seconds from exec to the first healthy answer, and the process's RSS (MB) then."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv} exited with {proc.returncode}")

    try:
        wait_until(f"{argv[0]} health", lambda: healthy(port), 60, interval=0.01, alive=alive, ignore=NOT_YET)
        return time.perf_counter() - began, tree_rss_mb(proc.pid, children=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def celery_worker_rss(env: dict[str, str], cwd: Path) -> float:
    """RSS (MB) of a bare Celery worker, thread pool, once ready and idle for 2 s."""
    (cwd / "floorworker.py").write_text(FLOOR_WORKER)
    argv = [sys.executable, "-m", "celery", "-A", "floorworker", "worker", "--pool", "threads", "--concurrency", "8",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # ends when the worker exits
            if " ready." in line:
                time.sleep(2)  # idle, as the side-by-side measures it
                return tree_rss_mb(proc.pid, children=False)
        raise RuntimeError(f"bare Celery worker exited with {proc.wait()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(config: str, rounds: int, codes: list[Path], database: str, redis_db: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix=f"start-floor-{config}-"))
    (tmp / "floorapp.py").write_text(FLOOR_APP)
    env = {**base_env(tmp / "home", "http://127.0.0.1:1/api"), **write_stack_app(tmp)}
    if config == "postgres":
        database_url, broker_url = fresh_postgres(database, redis_db)
        env.update(ORCH_DATABASE_URL=database_url, ORCH_BROKER_URL=broker_url)
    else:
        database_url = f"sqlite:///{tmp / 'home' / 'orchestrator.db'}"
        broker_url = f"sqla+sqlite:///{tmp / 'home' / 'broker.db'}"
    (tmp / "home").mkdir()
    env.update(FLOOR_DATABASE_URL=database_url, FLOOR_BROKER_URL=broker_url)
    port = free_port()
    ours = [ORCH, "server", "start", "--port", str(port)]
    floor = [sys.executable, "-m", "uvicorn", "floorapp:app", "--port", str(port), "--log-level", "warning"]
    stack = [sys.executable, "-m", "uvicorn", "stackapp:app", "--port", str(port), "--log-level", "warning"]
    # Ours of each checkout (none given: this one), its code first on PYTHONPATH.
    names = {"ours": env} if not codes else {
        f"ours {code}": {**env, "PYTHONPATH": os.pathsep.join((str(code), env["PYTHONPATH"]))} for code in codes}
    for ours_env in names.values():
        time_start(ours, ours_env, port, tmp)  # migrates the new database: later starts are restarts
    runs = [("floor", floor, env), ("stack floor", stack, env), *((name, ours, e) for name, e in names.items())]
    figures: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    figures.update({f"{name} RSS": [] for name, _, _ in runs})
    for _ in range(rounds):
        for name, argv, run_env in runs:
            seconds, rss = time_start(argv, run_env, port, tmp)
            figures[name].append(seconds)
            figures[f"{name} RSS"].append(rss)
    figures["Celery worker RSS"] = [celery_worker_rss(env, tmp)]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--config", choices=("embedded", "postgres", "both"), default="both")
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="a checkout whose `orch server start` to time (repeatable; default this one)")
    parser.add_argument("--database", default="orch_bench_floor", help="PostgreSQL database to recreate")
    parser.add_argument("--redis-db", type=int, default=12)
    args = parser.parse_args()
    precompile()
    codes = [code.resolve() for code in args.code]
    for code in codes:
        precompile(code)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} alternating rounds, medians")
    for config in ("embedded", "postgres") if args.config == "both" else (args.config,):
        figures = measure(config, args.rounds, codes, args.database, args.redis_db)
        median = {name: statistics.median(values) for name, values in figures.items()}
        ours = [name for name in figures if name.startswith("ours") and not name.endswith(" RSS")]
        print(f"{config:9} start: floor {median['floor'] * 1000:4.0f} ms, stack floor "
              f"{median['stack floor'] * 1000:4.0f} ms, " + ", ".join(
                  f"{name} {median[name] * 1000:4.0f} ms ({(median[name] - median['floor']) * 1000:.0f} ms above the floor)"
                  for name in ours) + f"   RSS at health: floor {median['floor RSS']:.0f} MB, " + ", ".join(
                  f"{name} {median[name + ' RSS']:.0f} MB" for name in ours) + "   bare Celery worker idle: "
              f"{median['Celery worker RSS']:.0f} MB")
        for name in ("floor", "stack floor", *ours):
            print(f"    {name:11} " + " ".join(f"{v * 1000:.0f}" for v in figures[name]) + " ms")


if __name__ == "__main__":
    main()
