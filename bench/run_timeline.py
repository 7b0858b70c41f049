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
  since the mark before it in time (a checkout may take them in another order). Also: the order to
  the fork server sent / applied in the flow-run process / answered (pid back in the worker), the
  lease's first beat opened and at the server, the worker's infrastructure report (a checkout that
  sends one), and the server's other work (event batches, trigger passes, workers' heartbeats);
  then each mark's offset from POST sent, and the runs that work collided with (``_collisions``).

``--statements``: also, inside the server, the claim's service (``claims.claim``) and each state
report's (``flow_runs.set_state``, RUNNING and the final state apart), commit excluded: wall and the
thread's CPU in all, and per statement it executes (SQLAlchemy's cursor events), p50.

After the steps: whether the fork server's standby (``runtime/standby.py``) was ready before its
order was sent (``standby_getting`` / ``standby_ready``: its ``get_ready`` started and returned; a
late standby holds its order in its socket until then); and the flow-run process's own counters
(main thread CPU, process CPU, minor page faults, involuntary context switches) from its order
applied to each of its later marks, p50.

``--gap S``: S seconds idle before each run (bench/compare.py's runs come after several), to see
which steps grow when the processes were idle.

Usage: python bench/run_timeline.py [--code PATH] [--runs 30] [--gap 0] [--database h3_timeline] [--redis-db 5] [--statements] [--dump FILE]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare.ours import OursSide
from run_timeline_statements import STATEMENTS

SITECUSTOMIZE = r'''
import importlib.abc, importlib.machinery, os, sys, time, functools

_OUT = os.environ.get("ORCH_BENCH_TIMELINE")


_COUNTED = {"order_applied", "process_main", "lease_open", "lease_sent", "entered_execute", "entrypoint_loaded",
            "report_called", "running_sent", "running_answered"}


def _mark(name, run_id):
    with open(_OUT, "a") as f:
        f.write(f"{time.time():.6f} {run_id} {name}\n")
    if name in _COUNTED and os.environ.get("ORCH_FLOW_RUN_ID"):  # the flow-run process's own counters
        import resource
        use = resource.getrusage(resource.RUSAGE_SELF)
        with open(_OUT + ".counted", "a") as f:
            f.write(f"{run_id} {name} {time.thread_time() * 1e3:.4f} {(use.ru_utime + use.ru_stime) * 1e3:.4f} "
                    f"{use.ru_minflt} {use.ru_nivcsw}\n")


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


_patch_base = _patch


def _patch(name, module):
    _patch_base(name, module)
    here = lambda a, k: os.environ.get("ORCH_FLOW_RUN_ID")
    if name == "orchestrator.server.services.run_columns":
        _wrap(module, "set_infrastructure", before="infra_at_server", after="infra_done_at_server", run_of=lambda a, k: a[1])
        _wrap(module, "heartbeat", before="beat_at_server", after="beat_done_at_server", run_of=lambda a, k: a[1])
    elif name == "workers.base":
        _wrap(module.BaseWorker, "_report_infrastructure", before="infra_sent", after="infra_answered", run_of=lambda a, k: a[1])
    elif name == "workers.forkserver":
        def take_run(a, k):
            return a[1].get("ORCH_FLOW_RUN_ID")
        _wrap(module.ForkServer, "take", before="order_sent", after="order_answered", run_of=take_run)
    elif name == "orchestrator.runtime.forkserver":
        _wrap(module, "_apply", after="order_applied", run_of=lambda a, k: (a[0].get("env") or {}).get("ORCH_FLOW_RUN_ID"))
        applied = module._apply

        def _apply(order, *args, **kwargs):  # a standby's end of get_ready, told once its run is known
            out = applied(order, *args, **kwargs)
            for name in ("getting", "ready"):
                at = _STANDBY.pop(name, None)
                if at is not None:
                    with open(_OUT, "a") as f:
                        f.write(f"{at:.6f} {(order.get('env') or {}).get('ORCH_FLOW_RUN_ID')} standby_{name}\n")
            return out
        module._apply = _apply
    elif name == "orchestrator.runtime.standby":
        get_ready = module.get_ready

        def ready(*args, **kwargs):
            _STANDBY["getting"] = time.time()
            out = get_ready(*args, **kwargs)
            _STANDBY["ready"] = time.time()
            return out
        module.get_ready = ready
    elif name == "orchestrator.sdk.run_lease":
        _wrap(module.RunLease, "open", before="lease_open", after="lease_sent", run_of=here)
    elif name == "orchestrator.client.transport":
        pass


# In a standby: when its get_ready started and returned, marked once its run is known. Not steps (MARKS):
# the steps stay comparable with earlier rounds; read apart, as the standby's slack before its order.
_STANDBY = {}
_WANTED.update({"orchestrator.server.services.run_columns", "workers.forkserver", "orchestrator.runtime.forkserver",
                "orchestrator.sdk.run_lease", "orchestrator.runtime.standby"})

_patch_base2 = _patch


def _patch(name, module):
    _patch_base2(name, module)
    if name == "orchestrator.server.api.ingest":
        orig = module.EventWriter.write

        async def write(self, batch):
            _mark("idle_events_start", "-")
            try:
                return await orig(self, batch)
            finally:
                _mark("idle_events_end", "-")
        module.EventWriter.write = write
    elif name == "orchestrator.server.triggers.evaluator":
        _wrap(module.Evaluator if hasattr(module, "Evaluator") else module.TriggerEvaluator, "run_pass",
              before="idle_pass_start", after="idle_pass_end", run_of=lambda a, k: "-")
    elif name == "orchestrator.server.services.work_pools":
        _wrap(module, "heartbeat", before="idle_wbeat_start", after="idle_wbeat_end", run_of=lambda a, k: "-")


_WANTED.update({"orchestrator.server.api.ingest", "orchestrator.server.triggers.evaluator",
                "orchestrator.server.services.work_pools"})

if _OUT:
    sys.meta_path.insert(0, _Finder())
'''


MARKS = ["create_service_done", "published", "posted", "delivered", "claim_at_server", "claim_done_at_server",
         "claim_answered", "order_sent", "order_applied", "order_answered", "forked", "infra_sent", "infra_at_server", "infra_done_at_server", "infra_answered", "lease_open", "lease_sent", "beat_at_server", "beat_done_at_server", "process_main", "log_shipper_started",
         "task_run_shipper_started", "heartbeat_started", "output_captured", "entered_execute", "entrypoint_loaded",
         "report_called", "running_sent", "running_at_server", "running_answered", "final_at_server"]


def _collisions(sent: dict[str, float], marks: dict[str, Any]) -> None:
    """The RUNNING report's trip (sent -> at the server's service) with other work of the run still
    in the server (the worker's infrastructure report, the lease's first beat) or not; and create ->
    RUNNING with the server's other work in the window (a worker's event batch, a trigger
    evaluation pass, a worker's heartbeat: usually the runs before's, or idle work) or not."""
    busy: list[float] = []
    free: list[float] = []
    for run_id in sent:
        seen = marks[run_id]
        if "running_sent" not in seen or "running_at_server" not in seen:
            continue
        trip = (seen["running_at_server"] - seen["running_sent"]) * 1000
        inside = any(name in seen and seen[name] > seen["running_sent"]
                     for name in ("infra_done_at_server", "beat_done_at_server"))
        (busy if inside else free).append(trip)
    for label, values in (("RUNNING sent -> at the server, infrastructure report or first beat still there", busy),
                          ("RUNNING sent -> at the server, neither", free)):
        if values:
            print(f"  {label:80s} {statistics.median(values):6.1f} ({len(values)} runs)")
    other = marks.get("-", {})
    spans = {kind: list(zip(sorted(other.get(f"idle_{kind}_start", [])), sorted(other.get(f"idle_{kind}_end", []))))
             for kind in ("events", "pass", "wbeat")}
    hit: list[float] = []
    clear: list[float] = []
    for run_id, t0 in sent.items():
        t1 = marks[run_id].get("running_at_server")
        if t1 is None:
            continue
        overlapped = any(a < t1 and b > t0 for ranges in spans.values() for a, b in ranges)
        (hit if overlapped else clear).append((t1 - t0) * 1000)
    for label, values in (("POST sent -> RUNNING, an event batch / trigger pass / worker beat in the window", hit),
                          ("POST sent -> RUNNING, none", clear)):
        if values:
            print(f"  {label:80s} {statistics.median(values):6.1f} ({len(values)} runs)")


def _counted(path: Path, sent: dict[str, float]) -> None:
    """The flow-run process's own counters from its order applied to each later mark (p50): its main
    thread's CPU (``thread_time``; the marks' own writes included), the process's CPU (every
    thread), minor page faults, involuntary context switches."""
    if not path.exists():
        return
    seen: dict[str, dict[str, list[float]]] = collections.defaultdict(dict)
    for line in path.read_text().splitlines():
        run_id, name, *values = line.split()
        seen[run_id].setdefault(name, [float(v) for v in values])
    print("the flow-run process from order_applied (p50): main thread CPU ms / process CPU ms / minor faults /"
          " involuntary switches")
    for name in ["process_main", "lease_open", "lease_sent", "entered_execute", "entrypoint_loaded", "report_called",
                 "running_sent", "running_answered"]:
        rows = [[b - a for a, b in zip(seen[r]["order_applied"], seen[r][name])]
                for r in sent if "order_applied" in seen[r] and name in seen[r]]
        if rows:
            print(f"  {name:30s} " + " / ".join(f"{statistics.median(column):6.2f}" for column in zip(*rows))
                  + f"  (n={len(rows)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database", default="h3_timeline")
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="py-spy the server (all threads) during the runs into this file")
    parser.add_argument("--dump", type=Path, help="write every mark of every run here (JSON)")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds idle before each run")
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
            time.sleep(args.gap)
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
        if run_id == "-":
            marks.setdefault("-", {}).setdefault(name, []).append(float(when))
            continue
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
    offsets = collections.defaultdict(list)
    for run_id, t0 in sent.items():
        seen = {**marks[run_id], "posted": posted[run_id]}
        for n, v in seen.items():
            offsets[n].append((v - t0) * 1000)
    print("offsets from POST sent (p50 / p90):")
    for n in sorted(offsets, key=lambda n: statistics.median(offsets[n])):
        vs = sorted(offsets[n])
        print(f"  {n:30s} {statistics.median(vs):6.1f} / {vs[int(len(vs)*0.9)]:6.1f}  (n={len(vs)})")
    if args.dump:
        import json

        args.dump.write_text(json.dumps({"sent": sent, "marks": marks}))
    _collisions(sent, marks)
    print(f"{args.code}: {len(sent)} runs, load {load[0]:.1f}-{load[-1]:.1f}; ms since the mark before (p50 / p90):")
    for name in [*[n for n in MARKS if n in steps], *[n for n in steps if n not in MARKS]]:
        values = sorted(steps[name])
        print(f"  {name:45s} {statistics.median(values):6.1f} / {values[int(len(values) * 0.9)]:6.1f}")
    slack = sorted((marks[r]["order_sent"] - marks[r]["standby_ready"]) * 1000 for r in sent
                   if "standby_ready" in marks[r] and "order_sent" in marks[r])
    if slack:  # negative: the order came while the standby was still getting ready
        getting = sorted((marks[r]["standby_ready"] - marks[r]["standby_getting"]) * 1000 for r in sent
                         if "standby_getting" in marks[r] and "standby_ready" in marks[r])
        print(f"a standby ready before its order was sent by (ms, p10 / p50): {slack[len(slack) // 10]:.1f} / "
              f"{statistics.median(slack):.1f}; late in {sum(v < 0 for v in slack)} of {len(slack)} runs; "
              f"its get_ready took (p50 / p90) {statistics.median(getting):.1f} / {getting[len(getting) * 9 // 10]:.1f} ms")
    _counted(Path(f"{out}.counted"), sent)
    if args.statements:
        timed: dict[str, list[list[float]]] = collections.defaultdict(lambda: [[] for _ in range(7)])
        for line in Path(f"{out}.statements").read_text().splitlines():
            name, *values = line.rsplit(maxsplit=7)
            for column, value in zip(timed[name], values):
                column.append(float(value))
        backends = collections.Counter(line.split()[0] for line in Path(f"{out}.backends").read_text().splitlines()
                                       if " claim: statement 1 (" in line)  # a SELECT, or the folded UPDATE
        print(f"the claims' PostgreSQL backends (claims each): {sorted(backends.values(), reverse=True)}")
        print("in the server (p50, ms): wall = thread CPU + thread waiting for a core + the rest (blocked: the database,"
              " the GIL); the server's other threads' CPU in that time (the event loop's apart); the PostgreSQL"
              " backend's CPU and its wait for a core")
        print(f"  {'':45s} {'wall':>6} {'CPU':>5} {'queued':>6} {'rest':>6} {'others':>6} {'loop':>5} {'pg CPU':>6}"
              f" {'pg q':>5}")
        for name in sorted(timed):
            wall, cpu, queued, others, loop, b_cpu, b_queued = timed[name]
            rest = [w - c - q for w, c, q in zip(wall, cpu, queued)]
            print(f"  {name:45s} {statistics.median(wall):6.2f} {statistics.median(cpu):5.2f} "
                  f"{statistics.median(queued):6.2f} {statistics.median(rest):6.2f} {statistics.median(others):6.2f} "
                  f"{statistics.median(loop):5.2f} "
                  f"{statistics.median(b_cpu):6.2f} {statistics.median(b_queued):5.2f}  (n={len(wall)})")

if __name__ == "__main__":
    main()
