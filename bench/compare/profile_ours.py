"""Profile our side where bench/compare.py shows we are not 10x better than Prefect (py-spy, sampling).

  python bench/compare/profile_ours.py create-api [--config postgres|embedded]
      the server while it takes the compare's create-run load (sequential, then 20 clients);
  python bench/compare/profile_ours.py create-rate [--config ...] [--rounds N]
      the sequential create-run rate the compare measures, unprofiled, N rounds of 500 POSTs against
      one server (with its worker connected), to compare code changes without the compare's noise;
  python bench/compare/profile_ours.py create-phases [--config ...]
      wall time of each step of the create-run route, in process, and of the dispatcher ticks it
      causes;
  python bench/compare/profile_ours.py cold-start [--config ...] [--restart]
      ``orch server start`` from exec to health OK (on an empty database, or a restart);
  python bench/compare/profile_ours.py cancel [--config ...]
      where a cancel's time goes: API cancel -> process gone, against SIGTERM sent straight to the
      flow-run process -> gone (the rest is the API and the worker's cancellation channel).

py-spy comes from PyPI (``pip install py-spy`` into any venv; pass ``--py-spy PATH`` or have it on PATH).
Prints the top frames by total and by own samples (``--format raw`` stacks, line numbers dropped).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skeleton import ORCH

from compare import measures
from compare.common import NOT_YET, cpu_seconds, pct, pid_gone, tree_pids, wait_until
from compare.ours import OursSide

# Database and Redis db of the profiled server (recreated, flushed): ORCH_BENCH_PROF_DB / _REDIS_DB override.
PROF_DB = os.environ.get("ORCH_BENCH_PROF_DB", "orch_bench_cmp_prof")
PROF_REDIS = int(os.environ.get("ORCH_BENCH_PROF_REDIS_DB", "15"))


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``; keeps package context for site-packages."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def summarize(raw: Path, top: int = 25, only: str = "") -> str:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if only and not any(only in f for f in frames):
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    out = [f"{total} samples" + (f" (stacks containing {only!r})" if only else "")]
    out.append("  by total (inclusive):")
    out += [f"    {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    out.append("  by own samples:")
    out += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def py_spy(path: str | None) -> str:
    found = path or shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: pip install py-spy (into any venv) and pass --py-spy PATH")
    return found


GIL_ONLY = False  # --gil: sample only the thread holding the GIL (where Python's CPU goes, no waits)


def record_pid(spy: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--threads",
                             *(["--gil"] if GIL_ONLY else []), "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop_recorder(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def create_api(config: str, spy: str, work: Path) -> None:
    side = OursSide(config, database=PROF_DB, redis_db=PROF_REDIS)
    try:
        side.setup()
        assert side.server is not None
        out = work / "create-api.txt"
        recorder = record_pid(spy, side.server.pid, out)
        figures, ids = measures.create_api(side, 200, 20, 25)
        stop_recorder(recorder)
        print(f"create-run API while profiled ({config}): {figures}")
        print(summarize(out))
        print(summarize(out, only="orchestrator/"))
        measures.cleanup_runs(side, ids)
    finally:
        side.stop()


def create_rate(config: str, rounds: int, per_round: int = 500) -> None:
    side = OursSide(config, database=PROF_DB, redis_db=PROF_REDIS)
    try:
        side.setup()
        for _ in range(50):  # warm-up: connections, prepared statements
            side.create_run("idle", strict=True)
        rates = []
        for _ in range(rounds):
            began = time.perf_counter()
            ids = [side.create_run("idle", strict=True) for _ in range(per_round)]
            rates.append(per_round / (time.perf_counter() - began))
            measures.cleanup_runs(side, ids)
        print(f"create-run API, sequential ({config}), {rounds} x {per_round}: "
              + ", ".join(f"{r:.0f}" for r in rates) + f" /s; median {pct(rates, 0.5):.0f} /s")
    finally:
        side.stop()


def cold_start(config: str, spy: str, work: Path, *, restart: bool) -> None:
    side = OursSide(config, database=PROF_DB, redis_db=PROF_REDIS)
    try:
        side.fresh_database()
        if restart:  # profile the second start, on the database the first one migrated
            side.start_server()
            side.stop_process(side.server)
        out = work / "cold-start.txt"
        began = time.perf_counter()
        recorder = subprocess.Popen([spy, "record", "--rate", "500", "--format", "raw", "--output", str(out),
                                     "--", ORCH, "server", "start", "--port", str(side.port)], env=side.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("health", side.healthy, 120, interval=0.05, ignore=NOT_YET)
        print(f"{'restart' if restart else 'cold start'} under py-spy ({config}): "
              f"{time.perf_counter() - began:.2f} s (py-spy slows it)")
        for pid in tree_pids(recorder.pid)[1:]:
            os.kill(pid, signal.SIGTERM)
        recorder.wait(timeout=60)
        print(summarize(out, top=40))
    finally:
        side.stop()


def cancel(config: str, work: Path, rounds: int = 5) -> None:
    side = OursSide(config, database=PROF_DB, redis_db=PROF_REDIS)
    try:
        side.setup()
        via_api = measures.cancel_running([side], rounds)[side.label]
        direct = []
        for _ in range(rounds):
            run_id = side.create_run("sleeper")
            pid = side.wait_running(run_id, 120)["pid"]
            sent = time.time()
            os.kill(pid, signal.SIGTERM)
            wait_until("process gone", functools.partial(pid_gone, pid), 60, interval=0.005)
            direct.append(time.time() - sent)
            side.wait_final(run_id, 120)
        print(f"cancel ({config}), {rounds} rounds: API -> gone p50 {pct(via_api['gone'], 0.5) * 1000:.0f} ms, "
              f"API -> CANCELLED p50 {pct(via_api['cancelled'], 0.5) * 1000:.0f} ms; "
              f"SIGTERM straight to the flow-run process -> gone p50 {pct(direct, 0.5) * 1000:.0f} ms")
    finally:
        side.stop()


def create_phases(config: str, *, count: int = 200) -> None:
    """Wall time of each step of ``POST /deployments/{id}/runs``, in process (``create_app`` behind
    Starlette's TestClient), and of the dispatcher ticks it causes on their own thread."""
    import collections
    import functools
    import tempfile
    import threading

    if config == "postgres":
        from compare.ours import fresh_postgres

        db, broker = fresh_postgres(PROF_DB, PROF_REDIS)
        os.environ.update(ORCH_DATABASE_URL=db, ORCH_BROKER_URL=broker)
    os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-profile-")
    from fastapi.testclient import TestClient

    from orchestrator.server.api.app import create_app
    from orchestrator.server.dispatcher import Dispatcher
    from orchestrator.server.services import flow_runs
    from orchestrator.settings import Settings

    spent: collections.defaultdict[str, float] = collections.defaultdict(float)

    def timed(owner: object, attr: str, label: str, *, thread: str | None = None) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> object:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if thread is None or threading.current_thread().name == thread:
                    spent[label] += time.perf_counter() - began
                    spent[label + " #"] += 1

        setattr(owner, attr, wrapper)

    timed(flow_runs, "create", "flow_runs.create (SELECT deployment+pool+queue, INSERT run, INSERT state)")
    timed(Dispatcher, "publish_created", "dispatcher.publish_created (direct publish to the broker)")
    timed(Dispatcher, "tick", "dispatcher tick (own thread)", thread="dispatcher")
    with TestClient(create_app(Settings())) as client:
        client.post("/api/work_pools", json={"name": "idle", "type": "process"})
        deployment = client.post("/api/deployments", json={
            "flow_name": "noop", "name": "idle", "entrypoint": "flows.py:noop", "work_pool_name": "idle"}).json()
        for _ in range(10):  # warm-up
            client.post(f"/api/deployments/{deployment['id']}/runs", json={})
        time.sleep(0.5)
        spent.clear()
        began = time.perf_counter()
        for _ in range(count):
            response = client.post(f"/api/deployments/{deployment['id']}/runs", json={})
            assert response.status_code == 201, response.text
        elapsed = time.perf_counter() - began
        time.sleep(0.3)
    print(f"[{config}] {count} sequential "
          f"creates in process: {elapsed / count * 1000:.2f} ms each ({count / elapsed:.0f}/s)")
    for label, seconds in sorted(((k, v) for k, v in spent.items() if not k.endswith(" #")), key=lambda kv: -kv[1]):
        calls = spent[label + " #"]
        print(f"  {seconds / count * 1000:6.2f} ms per create  {label}  ({calls / count:.2f} calls per create, "
              f"{seconds / max(calls, 1) * 1000:.2f} ms each)")


def backend_cpu(database: str) -> float:
    """CPU seconds (utime + stime) so far of the PostgreSQL backends connected to ``database``."""
    from tests.harness import PG_ADMIN

    query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'"
    out = subprocess.run([*PG_ADMIN[:-1], "-tAc", query], capture_output=True, text=True, timeout=30, check=True).stdout
    return cpu_seconds(int(line) for line in out.split())


def create_cpu(config: str, *, count: int, rounds: int, events_off: bool, profile: bool) -> None:
    """CPU of ``POST /deployments/{id}/runs`` without HTTP: the route function called in a loop on
    one thread (its session, statements, commit, publish, hub announcement, response built), the
    process's ``time.process_time`` and, on PostgreSQL, the backends' CPU per create; the
    statements per create; with ``profile``, cProfile's top functions. ``events_off`` turns the
    run's Scheduled event off as bench/create_run_api_events.py does, to compare."""
    import collections
    import cProfile
    import pstats
    import tempfile
    import uuid

    if config == "postgres":
        from compare.ours import fresh_postgres

        db, broker = fresh_postgres(PROF_DB, PROF_REDIS)
        os.environ.update(ORCH_DATABASE_URL=db, ORCH_BROKER_URL=broker)
    os.environ["ORCH_HOME"] = tempfile.mkdtemp(prefix="orch-profile-")
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    import orchestrator.server.api.routes.deployments as route
    from orchestrator import schemas
    from orchestrator.server.api.app import create_app
    from orchestrator.server.services import emitted
    from orchestrator.settings import Settings

    if events_off:
        emitted.runs_created = lambda session, rows: []
        emitted.runs_created_rows = lambda session, rows: []  # PostgreSQL's writer builds the rows straight
    with TestClient(create_app(Settings())) as client:
        ctx = client.app.state.ctx
        client.post("/api/work_pools", json={"name": "idle", "type": "process"})
        deployment = uuid.UUID(client.post("/api/deployments", json={
            "flow_name": "noop", "name": "idle", "entrypoint": "flows.py:noop", "work_pool_name": "idle",
            "tags": ["bench", "events"]}).json()["id"])
        statements: collections.Counter[str] = collections.Counter()

        @event.listens_for(ctx.engine, "before_cursor_execute")
        def counted(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            statements[statement.split()[0] + " " + " ".join(statement.split()[1:4])[:60]] += 1

        body = schemas.FlowRunCreate()
        for _ in range(50):  # warm-up: connections, prepared statements, caches
            route.create_flow_run(deployment, body, ctx)
        statements.clear()
        for r in range(rounds):
            db_before = backend_cpu(PROF_DB) if config == "postgres" else 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            profiler = cProfile.Profile() if profile and r == 0 else None
            if profiler:
                profiler.enable()
            for _ in range(count):
                route.create_flow_run(deployment, body, ctx)
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            db_cpu = (backend_cpu(PROF_DB) - db_before) if config == "postgres" else 0.0
            print(f"[{config} events {'off' if events_off else 'on'}] round {r + 1}: {count} creates, server CPU "
                  f"{cpu / count * 1000:.3f} ms, database backends {db_cpu / count * 1000:.3f} ms, "
                  f"wall {wall / count * 1000:.3f} ms per create (load {os.getloadavg()[0]:.1f})"
                  + (" [cProfile on]" if profiler else ""), flush=True)
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        print("statements per create:")
        for text_, n in statements.most_common():
            print(f"  {n / (rounds * count):5.2f}  {text_}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["create-api", "create-rate", "create-phases", "create-cpu", "cold-start",
                                         "cancel"])
    parser.add_argument("--config", choices=["postgres", "embedded"], default="postgres")
    parser.add_argument("--py-spy", dest="spy", default=None)
    parser.add_argument("--restart", action="store_true", help="cold-start: profile a restart, not a first start")
    parser.add_argument("--rounds", type=int, default=5, help="create-rate: rounds of 500 POSTs")
    parser.add_argument("--count", type=int, default=1000, help="create-cpu: creates per round")
    parser.add_argument("--events-off", action="store_true", help="create-cpu: without the run's event")
    parser.add_argument("--cprofile", action="store_true", help="create-cpu: cProfile the first round")
    parser.add_argument("--gil", action="store_true", help="create-api: sample only the thread holding the GIL")
    args = parser.parse_args()
    global GIL_ONLY
    GIL_ONLY = args.gil
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "orch-profile"
    work.mkdir(exist_ok=True)
    if args.what == "create-api":
        create_api(args.config, py_spy(args.spy), work)
    elif args.what == "create-rate":
        create_rate(args.config, args.rounds)
    elif args.what == "create-phases":
        create_phases(args.config)
    elif args.what == "create-cpu":
        create_cpu(args.config, count=args.count, rounds=args.rounds, events_off=args.events_off,
                   profile=args.cprofile)
    elif args.what == "cold-start":
        cold_start(args.config, py_spy(args.spy), work, restart=args.restart)
    else:
        cancel(args.config, work)


if __name__ == "__main__":
    main()
