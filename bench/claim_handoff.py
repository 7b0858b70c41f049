"""What handing the claim to the flow-run process saves per run (issue 15 point 2).

    python bench/claim_handoff.py [--rounds 15] [--reads 200]

Starts ``orch server start`` on the embedded defaults (a fresh ORCH_HOME) and deploys a no-op flow.

- ``fetch``: what the engine did before, per run: GET the run, then GET its deployment, with a warm
  client (the engine's own first requests also pay a connection; so this is the least it saved),
  against ``read``: parsing the ``ORCH_FLOW_RUN_CLAIM`` JSON the worker hands over. ``--reads``
  times each, medians and p90s in ms.
- ``process``: a whole flow-run process for a no-op run (``python -m orchestrator.engine``,
  claimed first, the worker's environment), spawn -> reaped, with and without the hand-off, in
  turn so that machine load hits both alike; ``--rounds`` each after one warm-up round; and the
  CPU time of each process, which machine load disturbs less than its wall time.
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


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.2f}  p90 {pct(values, 0.9):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()

    from orchestrator import schemas
    from orchestrator.client import Client
    from orchestrator.handoff import CLAIM_VARIABLE, handoff_environment, read_handoff

    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-handoff-"))
    stack = harness.Stack(tmp, orch=harness.ORCH_SCRIPT)
    client = Client(stack.api_url)
    try:
        stack.start_server(timeout=90)
        client.create_work_pool(schemas.WorkPoolCreate(name="bench", type="process"))
        flows = tmp / "flows"
        flows.mkdir()
        (flows / "flows.py").write_text(FLOWS_PY)
        deployment = client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="noop", name="bench", entrypoint="flows.py:noop", path=str(flows), work_pool_name="bench"))

        def claimed() -> schemas.Claim:
            run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
            claim = client.claim_flow_run(run.id, "bench", "bench")
            client.heartbeat("bench", "bench", running=[run.id])  # a live holder: the reaper leaves it
            return claim

        claim = claimed()
        handed = handoff_environment(claim)
        fetch, read = [], []
        for _ in range(args.reads):
            started = time.perf_counter()
            run = client.read_flow_run(claim.flow_run.id)
            client.read_deployment(run.deployment_id)  # type: ignore[arg-type]
            fetch.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            read_handoff(handed, claim.flow_run.id)
            read.append((time.perf_counter() - started) * 1000)
        print(f"per run, run + deployment ({len(handed[CLAIM_VARIABLE])} bytes handed over), {args.reads} times (ms):")
        print(f"  fetch (2 GETs, warm client)   {summary(fetch)}")
        print(f"  read (parse the hand-off)     {summary(read)}")

        base = {**stack.env, "ORCH_WORKER_NAME": "bench", "ORCH_WORKER_HEARTBEAT_SECONDS": "10",
                "ORCH_CLIENT_TIMEOUT_SECONDS": "30"}
        figures: dict[str, list[float]] = {"handed over": [], "fetched": []}
        cpu: dict[str, list[float]] = {way: [] for way in figures}
        for round_ in range(args.rounds + 1):  # the first round warms up (byte-compiling, caches)
            for way in figures:
                claim = claimed()
                env = {**base, "ORCH_FLOW_RUN_ID": str(claim.flow_run.id)}
                if way == "handed over":
                    env.update(handoff_environment(claim))
                started = time.perf_counter()
                process = subprocess.Popen([sys.executable, "-m", "orchestrator.engine"], cwd=flows, env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _pid, status, usage = os.wait4(process.pid, 0)  # its CPU time too: less disturbed by load
                took = (time.perf_counter() - started) * 1000
                code = process.returncode = os.waitstatus_to_exitcode(status)
                state = client.read_flow_run(claim.flow_run.id).state.type
                if code != 0 or state != "COMPLETED":
                    raise RuntimeError(f"{way}: exit code {code}, run {state}")
                if round_:
                    figures[way].append(took)
                    cpu[way].append((usage.ru_utime + usage.ru_stime) * 1000)
        print(f"whole flow-run process, no-op run, spawn -> reaped, {args.rounds} rounds (ms):")
        for way, values in figures.items():
            print(f"  {way:12} {summary(values)}  [{', '.join(f'{v:.0f}' for v in values)}]")
        print("CPU time of the whole flow-run process (user + system, ms):")
        for way, values in cpu.items():
            print(f"  {way:12} {summary(values)}")
    finally:
        client.close()
        stack.stop(grace=30)


if __name__ == "__main__":
    main()
