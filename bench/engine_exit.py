"""How long a flow-run process takes to exit once its outcome is reported, by way of exiting.

    python bench/engine_exit.py [--rounds 15]

Starts ``orch server start`` on the embedded defaults (a fresh ORCH_HOME), deploys a no-op flow
and, round after round, runs one of its runs through ``python -c`` calling ``orchestrator.runtime.engine``'s
``main()`` as ``python -m orchestrator.engine`` would (the run claimed first, the worker's
environment), then exits one of these ways, in turn so that machine load hits all alike:

- ``private``: what the engine did until issue 15: ``threading._shutdown()`` and
  ``atexit._run_exitfuncs()`` by hand, flush, ``os._exit``;
- ``engine``: ``orchestrator.runtime.engine.end_process``, whatever it does now;
- ``sys.exit``: the interpreter's own exit, with its teardown of every module;
- ``atexit-last``: the interpreter's own exit up to its atexit handlers, the last of which (public
  ``atexit.register`` before the engine is imported) flushes and calls ``os._exit``: no teardown,
  but the handlers registered before it (at interpreter start: a ``.pth`` file's, such as
  coverage's) never run, and a non-daemon thread still blocks it, which a cancelled run cannot wait for.

The figure is main() returned -> process reaped by its parent (``time.monotonic`` is one clock for
every process of the machine): the child writes the instant main() returned to a file, the parent
reads the clock when ``wait4()`` returns. Prints medians and p90s per way, and each way's figures,
then the CPU time of each way's whole process, which a loaded machine disturbs less: everything
but the exit is the same code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from skeleton import pct

from tests import harness  # skeleton put the repository on the path

FLOWS_PY = "from orchestrator import flow\n\n\n@flow\ndef noop() -> None:\n    pass\n"
CHILD = r'''
import atexit, os, sys, time
from pathlib import Path

way, stamp = sys.argv[1], Path(sys.argv[2])
if way == "atexit-last":
    def exit_now():
        import logging
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    atexit.register(exit_now)  # before the engine's imports: it runs after their handlers
from orchestrator.sdk.running import engine

code = engine.main()
stamp.write_text(repr(time.monotonic()))
if way == "private":
    import atexit, logging, threading
    threading._shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
elif way == "engine":
    engine.end_process(code)
elif way == "frozen+sys.exit":
    import gc
    gc.freeze()  # what is alive now is left to the process's end, not collected by the teardown
    sys.exit(code)
else:
    sys.exit(code)
'''
WAYS = ("private", "engine", "sys.exit", "frozen+sys.exit", "atexit-last")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from orchestrator import schemas
    from orchestrator.client import Client

    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-exit-"))
    stack = harness.Stack(tmp, orch=harness.ORCH_SCRIPT)
    env = stack.env
    client = Client(stack.api_url)
    try:
        stack.start_server(timeout=90)
        client.create_work_pool(schemas.WorkPoolCreate(name="bench", type="process"))
        flows = tmp / "flows"
        flows.mkdir()
        (flows / "flows.py").write_text(FLOWS_PY)
        deployment = client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="noop", name="bench", entrypoint="flows.py:noop", path=str(flows), work_pool_name="bench"))
        run_env = {**env, "ORCH_WORKER_NAME": "bench", "ORCH_WORKER_HEARTBEAT_SECONDS": "10",
                   "ORCH_CLIENT_TIMEOUT_SECONDS": "30"}
        figures: dict[str, list[float]] = {way: [] for way in WAYS}
        cpu: dict[str, list[float]] = {way: [] for way in WAYS}
        for round_ in range(args.rounds + 1):  # the first round warms up (byte-compiling, caches)
            for way in WAYS:
                run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
                client.claim_flow_run(run.id, "bench", "bench")
                # A live worker "bench" holding it, or the reaper gives the run back before it starts.
                client.heartbeat("bench", "bench", running=[run.id])
                stamp = tmp / "returned"
                process = subprocess.Popen([sys.executable, "-c", CHILD, way, str(stamp)], cwd=flows,
                                           env={**run_env, "ORCH_FLOW_RUN_ID": str(run.id)},
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _pid, status, usage = os.wait4(process.pid, 0)  # its CPU time too
                reaped = time.monotonic()
                code = process.returncode = os.waitstatus_to_exitcode(status)
                state = client.read_flow_run(run.id).state.type
                if code != 0 or state != "COMPLETED":
                    raise RuntimeError(f"{way}: exit code {code}, run {state}")
                if round_:
                    figures[way].append((reaped - float(stamp.read_text())) * 1000)
                    cpu[way].append((usage.ru_utime + usage.ru_stime) * 1000)
        print(f"main() returned -> process reaped, no-op flow run, {args.rounds} rounds (ms):")
        for way, values in figures.items():
            print(f"  {way:15} median {statistics.median(values):5.1f}  p90 {pct(values, 0.9):5.1f}  "
                  f"[{', '.join(f'{v:.1f}' for v in values)}]")
        print("CPU time of the whole flow-run process (user + system, ms; the ways differ only in the exit):")
        for way, values in cpu.items():
            print(f"  {way:15} median {statistics.median(values):5.1f}  p90 {pct(values, 0.9):5.1f}")
    finally:
        client.close()
        stack.stop(grace=30)


if __name__ == "__main__":
    main()
