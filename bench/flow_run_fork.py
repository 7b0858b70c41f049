"""The flow-run process's path from its order applied to its RUNNING report sent, counted in forked
children as the fork server makes them (issue 22): no server, no worker, no other process's load.

    PYTHONPATH=<tree> python bench/flow_run_fork.py [--forks 40] [--params none|plain|optional|listed]
                                                   [--steps] [--profile FILE]
    PYTHONPATH=<tree> valgrind --tool=callgrind --collect-atstart=no --instr-atstart=no \
        --callgrind-out-file=DIR/cg.%p python bench/flow_run_fork.py --forks 5 --toggle DIR/toggle.so

This process does what the fork server does before its first fork (``serve_forks``'s imports, its
rehearsal, ``gc.freeze``), listens on a local port that never answers (the kernel accepts the
connections: a request is written, never read), then per fork: a standby's ``get_ready`` (connected
ahead to that port), the order's environment applied (the run id, a claim's hand-off of a
deployment whose flow file is in a temporary folder, the worker's variables), and ``engine.main``
until the RUNNING report is written (``on_sent``), where the child records and leaves. Each child
records its main thread's CPU and minor page faults from the order applied to the RUNNING report
sent (and, ``--steps``, at each step); p50 and min over the forks. ``--params``: the flow's
signature (``--help``). ``--toggle``: callgrind counts the same stretch in each child (its dump named
"running_sent"); the library is ``bench/route_instructions.py``'s ``TOGGLE_C`` built with gcc.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

FLOWS = """from orchestrator import flow


@flow
def noop() -> None:
    pass


@flow
def with_params(x: int, name: str = "a") -> None:
    pass


@flow
def with_optional(x: int | None = None, name: str = "a") -> None:
    pass


@flow
def with_list(x: list[int], name: str = "a") -> None:
    pass
"""


def counters() -> tuple[float, int]:
    return time.thread_time() * 1e3, resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def handoff_text(run_id: str, folder: str, params: str) -> str:
    from orchestrator.handoff import rehearsal_text

    data = json.loads(rehearsal_text())
    data["flow_run"]["id"] = run_id
    data["flow_run"]["parameters"] = {"none": {}, "listed": {"x": ["3"]}}.get(params, {"x": "3"})
    name = {"none": "noop", "plain": "with_params", "optional": "with_optional", "listed": "with_list"}[
        params
    ]
    data["deployment"].update(path=folder, entrypoint=f"flows.py:{name}", flow_name=name)
    return json.dumps(data)


def child(args: argparse.Namespace, port: int, folder: str, out: Path) -> None:
    from orchestrator.runtime import engine, forkserver, standby

    api = f"http://127.0.0.1:{port}/api"
    take_output = standby.get_ready(api)
    run_id = str(uuid.uuid4())
    env = {
        "ORCH_FLOW_RUN_ID": run_id,
        "ORCH_API_URL": api,
        "ORCH_WORKER_NAME": "w",
        "ORCH_WORKER_HEARTBEAT_SECONDS": "30",
        "ORCH_CLIENT_TIMEOUT_SECONDS": "10",
        "ORCH_API_KEY": "",
        "ORCH_INFRASTRUCTURE_ID_PREFIX": "process:host:",
        "ORCH_FLOW_RUN_CLAIM": handoff_text(run_id, folder, args.params),
    }
    devnull = os.open(os.devnull, os.O_WRONLY)
    toggle = ctypes.CDLL(args.toggle) if args.toggle else None
    marks: list[tuple[str, float, int]] = []
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()

    def sent() -> None:
        if toggle is not None:
            toggle.block_end(b"running_sent")
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{args.profile}.{os.getpid()}")
        marks.append(("running_sent", *counters()))
        start = marks[0]
        out.open("a").write(
            json.dumps({name: (cpu - start[1], faults - start[2]) for name, cpu, faults in marks}) + "\n"
        )
        os._exit(0)

    if args.steps:
        wrap_steps(marks)
    engine.RunProcess.start_heartbeat = lambda self: sent()  # the RUNNING report's on_sent: written
    forkserver._apply({"env": env}, [devnull], take_output)
    marks.append(("order_applied", *counters()))
    if toggle is not None:
        toggle.block_start()
    if profiler is not None:
        profiler.enable()
    engine.main()
    os._exit(3)  # never here: RUNNING is always sent


def wrap_steps(marks: list[tuple[str, float, int]]) -> None:
    """A mark after each step of ``main`` and ``execute`` on the way to RUNNING."""
    from orchestrator import parameters
    from orchestrator.runtime import engine
    from orchestrator.sdk import flow_calls, flows, run_lease, task_runs

    def after(owner: object, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def wrapper(*a: object, **k: object) -> object:
            out = fn(*a, **k)
            marks.append((name, *counters()))
            return out

        setattr(owner, attr, wrapper)

    after(engine, "Client", "client")
    after(task_runs.TaskRunShipper, "start", "shippers")
    after(engine, "read_handoff", "read_handoff")
    after(run_lease.RunLease, "open", "lease_open")
    after(engine, "load_entrypoint", "load_entrypoint")
    after(parameters, "coerce_parameters", "coerce_parameters")
    after(parameters, "call_arguments", "call_arguments")
    after(flows.Flow, "run_version", "run_version")
    after(flow_calls, "run_name", "run_name")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--forks", type=int, default=40)
    parser.add_argument(
        "--params",
        choices=("none", "plain", "optional", "listed"),
        default="none",
        help="the flow's parameters: none (a no-op flow), plain (x: int, name: str = 'a'), "
        "optional (x: int | None = None, name: str = 'a'), listed (x: list[int], name: str = 'a'); "
        "the run gives x='3' (listed: x=['3'])",
    )
    parser.add_argument("--steps", action="store_true")
    parser.add_argument("--profile", help="cProfile each child's stretch into FILE.<pid>")
    parser.add_argument(
        "--toggle", help="the callgrind toggle library (bench/route_instructions.py's TOGGLE_C)"
    )
    args = parser.parse_args()
    import orchestrator.parameters
    import orchestrator.runtime.engine
    import orchestrator.schemas
    import orchestrator.sdk.flows  # noqa: F401 - as serve_forks imports it
    from orchestrator.runtime import forkserver

    forkserver._rehearse()
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    folder = tempfile.mkdtemp(prefix="flow-run-fork-")
    Path(folder, "flows.py").write_text(FLOWS)
    out = Path(folder, "out.jsonl")
    gc.freeze()
    for _ in range(args.forks):
        pid = os.fork()
        if pid == 0:
            try:
                child(args, listener.getsockname()[1], folder, out)
            finally:
                os._exit(4)
        os.waitpid(pid, 0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    print(f"{len(rows)} children; from order applied (p50 / min): main thread CPU ms, minor faults")
    for name in rows[0]:
        cpu = [row[name][0] for row in rows if name in row]
        faults = [row[name][1] for row in rows if name in row]
        print(
            f"  {name:20s} {statistics.median(cpu):6.2f} / {min(cpu):6.2f}   "
            f"{statistics.median(faults):6.0f} / {min(faults):6.0f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
