"""Where create -> RUNNING goes, on a timeline (issue 22): our stack alone (``orch server start``
+ ``orch worker start --limit 8``, PostgreSQL + Redis), one no-op run at a time.

Nothing in the product is changed to measure it: a ``sitecustomize`` put first on the processes'
``PYTHONPATH`` wraps a few functions as their modules are imported (server, worker, fork server and
the flow-run processes forked from it) and appends ``time.time()`` at each mark to one file. Marks,
per run (one clock: one machine):

  POST sent (client) -> create service returned (server, before the commit) -> published (after
  the commit, pushed to Redis) -> POST answered (client) -> delivered (the worker's ``handle``) ->
  claim at the server (route body) -> claim done (server, before its commit) -> claim answered
  (worker) -> process forked (worker's ``start`` returned) -> flow-run process ``main`` ->
  RUNNING sent (flow-run process) -> RUNNING at the server (route body) -> RUNNING answered ->
  the final state at the server (route body). Steps are listed in this order and each is the time
  since the mark before it in time (a checkout may take them in another order).

``--statements``: also, inside the server, the claim's service (``claims.claim``) and each state
report's (``flow_runs.set_state``, RUNNING and the final state apart), commit excluded: wall and the
thread's CPU in all, and per statement it executes (SQLAlchemy's cursor events), p50.

Usage: python bench/run_timeline.py [--code PATH] [--runs 30] [--database h3_timeline] [--redis-db 5] [--statements]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare.ours import OursSide

SITECUSTOMIZE = r'''
import importlib.abc, importlib.machinery, os, sys, time, functools

_OUT = os.environ.get("ORCH_BENCH_TIMELINE")


def _mark(name, run_id):
    with open(_OUT, "a") as f:
        f.write(f"{time.time():.6f} {run_id} {name}\n")


def _wrap(owner, attr, before=None, after=None, run_of=None):
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        run = run_of(args, kwargs) if run_of else None
        if before:
            _mark(before, run)
        out = fn(*args, **kwargs)
        if after:
            _mark(after, run if run is not None else _run_of_result(out))
        return out
    setattr(owner, attr, wrapper)


def _run_of_result(out):
    run = out[0] if isinstance(out, tuple) else out
    return getattr(run, "id", None)


def _patch(name, module):
    if name == "orchestrator.server.services.flow_runs":
        _wrap(module, "create", after="create_service_done")
        reported = module.set_state

        @functools.wraps(reported)
        def set_state(session, run_id, body, *args, **kwargs):
            _mark("running_at_server" if str(body.type).endswith("RUNNING") else "final_at_server", run_id)
            return reported(session, run_id, body, *args, **kwargs)
        module.set_state = set_state
    elif name == "orchestrator.server.services.claims":
        _wrap(module, "claim", before="claim_at_server", after="claim_done_at_server", run_of=lambda a, k: a[1])
    elif name == "orchestrator.server.dispatcher":
        _wrap(module.Dispatcher, "publish_created", after="published", run_of=lambda a, k: a[1][0].id)
    elif name == "workers.base":
        _wrap(module.BaseWorker, "handle", before="delivered", run_of=lambda a, k: a[1])
    elif name == "workers.process":
        _wrap(module.ProcessWorker, "start", after="forked", run_of=lambda a, k: a[1].flow_run.id)
    elif name == "orchestrator.client.calls":
        _wrap(module.Client, "claim_flow_run", after="claim_answered", run_of=lambda a, k: a[1])
        _wrap(module.Client, "set_flow_run_running", before="running_sent", after="running_answered",
              run_of=lambda a, k: a[1])
    elif name == "orchestrator.runtime.engine":
        here = lambda a, k: os.environ.get("ORCH_FLOW_RUN_ID")
        _wrap(module, "main", before="process_main", run_of=here)
        _wrap(module.RunProcess, "start_heartbeat", after="heartbeat_started", run_of=here)
        _wrap(module, "load_entrypoint", before="entered_execute", after="entrypoint_loaded", run_of=here)
        _wrap(module.RunProcess, "report", before="report_called", run_of=here)
    elif name == "orchestrator.runtime.logs":
        here = lambda a, k: os.environ.get("ORCH_FLOW_RUN_ID")
        _wrap(module.LogShipper, "start", after="log_shipper_started", run_of=here)
    elif name == "orchestrator.sdk.task_runs":
        here = lambda a, k: os.environ.get("ORCH_FLOW_RUN_ID")
        _wrap(module.TaskRunShipper, "start", after="task_run_shipper_started", run_of=here)
    elif name == "orchestrator.runtime.output":
        here = lambda a, k: os.environ.get("ORCH_FLOW_RUN_ID")
        _wrap(module.OutputCapture, "start", after="output_captured", run_of=here)


_WANTED = {"orchestrator.server.services.flow_runs", "orchestrator.server.services.claims",
           "orchestrator.server.dispatcher", "workers.base", "workers.process", "orchestrator.client.calls",
           "orchestrator.runtime.engine", "orchestrator.runtime.logs", "orchestrator.sdk.task_runs",
           "orchestrator.runtime.output"}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _WANTED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _patch(name, module)
        loader.exec_module = exec_module
        return spec


if _OUT:
    sys.meta_path.insert(0, _Finder())
'''

STATEMENTS = r'''
import threading

_STEP = threading.local()  # the service step this thread is in: (run, kind, statements so far)


def _in_step(fn, kind_of):
    @functools.wraps(fn)
    def step(*args, **kwargs):
        _STEP.now = [args[1], kind_of(args), 0]
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(f"{_STEP.now[1]}: all", w0, c0)
            _STEP.now = None
    return step


def _record(name, w0, c0):
    with open(_OUT + ".statements", "a") as f:
        f.write(f"{name} {(time.perf_counter() - w0) * 1e3:.4f} {(time.thread_time() - c0) * 1e3:.4f}\n")


def _before_statement(conn, cursor, statement, *args):
    if getattr(_STEP, "now", None):
        _STEP.now[2] += 1
        _STEP.t = (time.perf_counter(), time.thread_time())


def _after_statement(conn, cursor, statement, *args):
    if getattr(_STEP, "now", None):
        _record(f"{_STEP.now[1]}: statement {_STEP.now[2]} ({statement.split()[0]})", *_STEP.t)


_patch_marks = _patch


def _patch(name, module):
    _patch_marks(name, module)
    if name == "orchestrator.server.services.claims":
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        event.listen(Engine, "before_cursor_execute", _before_statement)
        event.listen(Engine, "after_cursor_execute", _after_statement)
        module.claim = _in_step(module.claim, lambda a: "claim")
    elif name == "orchestrator.server.services.flow_runs":
        module.set_state = _in_step(module.set_state, lambda a: str(a[2].type).rsplit(".", 1)[-1])
'''

MARKS = ["create_service_done", "published", "posted", "delivered", "claim_at_server", "claim_done_at_server",
         "claim_answered", "forked", "process_main", "log_shipper_started",
         "task_run_shipper_started", "heartbeat_started", "output_captured", "entered_execute", "entrypoint_loaded",
         "report_called", "running_sent", "running_at_server", "running_answered", "final_at_server"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database", default="h3_timeline")
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="py-spy the server (all threads) during the runs into this file")
    parser.add_argument("--statements", action="store_true",
                        help="the claim's and the state reports' service time per statement, in the server")
    args = parser.parse_args()
    hooks = Path(tempfile.mkdtemp(prefix="orch-timeline-"))
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE + (STATEMENTS if args.statements else ""))
    out = hooks / "marks.txt"
    side = OursSide("postgres", database=args.database, redis_db=args.redis_db)
    side.env["PYTHONPATH"] = f"{hooks}{os.pathsep}{args.code}"
    side.env["ORCH_BENCH_TIMELINE"] = str(out)
    sent: dict[str, float] = {}
    posted: dict[str, float] = {}
    load = [os.getloadavg()[0]]
    try:
        side.setup()
        recorder = None
        if args.profile:
            import subprocess

            from compare.profile_ours import py_spy

            assert side.server is not None
            recorder = subprocess.Popen([py_spy(None), "record", "--pid", str(side.server.pid), "--rate", "500",
                                         "--format", "raw", "--threads", "--output", str(args.profile), "--nonblocking"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2.0)  # py-spy attaches
        for i in range(args.runs + 2):
            t0 = time.time()
            run_id = side.create_run("noop")
            t1 = time.time()
            side.wait_final(run_id, 60)
            if i >= 2:
                sent[run_id], posted[run_id] = t0, t1
        load.append(os.getloadavg()[0])
        if recorder is not None:
            import signal

            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
    finally:
        side.stop()
    marks: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for line in out.read_text().splitlines():
        when, run_id, name = line.split()
        marks[run_id].setdefault(name, float(when))
    steps: dict[str, list[float]] = collections.defaultdict(list)
    for run_id, t0 in sent.items():
        seen = {**marks[run_id], "posted": posted[run_id]}
        previous = t0
        # In the order they happened: a checkout may take its steps in another order (the heartbeat
        # after the RUNNING report, say); each step is the time since the one before it.
        for name in sorted((n for n in MARKS if n in seen), key=lambda n: (seen[n], MARKS.index(n))):
            steps[name].append((seen[name] - previous) * 1000)
            previous = seen[name]
        steps["total: POST sent -> RUNNING at the server"].append((seen["running_at_server"] - t0) * 1000)
        if "final_at_server" in seen:
            steps["total: POST sent -> final state at the server"].append((seen["final_at_server"] - t0) * 1000)
    print(f"{args.code}: {len(sent)} runs, load {load[0]:.1f}-{load[-1]:.1f}; ms since the mark before (p50 / p90):")
    for name in [*[n for n in MARKS if n in steps], *[n for n in steps if n not in MARKS]]:
        values = sorted(steps[name])
        print(f"  {name:45s} {statistics.median(values):6.1f} / {values[int(len(values) * 0.9)]:6.1f}")
    if args.statements:
        timed: dict[str, tuple[list[float], list[float]]] = collections.defaultdict(lambda: ([], []))
        for line in Path(f"{out}.statements").read_text().splitlines():
            name, wall, cpu = line.rsplit(maxsplit=2)
            timed[name][0].append(float(wall))
            timed[name][1].append(float(cpu))
        print("in the server, commit excluded (p50 wall / thread CPU, ms):")
        for name in sorted(timed):
            print(f"  {name:45s} {statistics.median(timed[name][0]):6.2f} / {statistics.median(timed[name][1]):5.2f}"
                  f"  (n={len(timed[name][0])})")


if __name__ == "__main__":
    main()
