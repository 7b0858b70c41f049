"""What a forked flow-run process has cost by the time its flow is called, counted in the process
itself: CPU (user + system) and minor page faults from its fork to the flow's first line, for one or
more checkouts, alternating (issue 22: the fork server forked from the worker must not make a run's
way longer than a fresh fork server's).

    python bench/forked_run_cost.py --code /tmp/h4-old --code /tmp/h4 [--rounds 3] [--runs 20]
                                    [--database orch_h4_forked] [--redis-db 42]

Each round: ``orch server start`` + ``orch worker start --limit 8`` of that checkout on PostgreSQL +
Redis, one deployment of a flow that writes ``resource.getrusage(RUSAGE_SELF)`` and its parent's
pid, then ``--runs`` runs one at a time (each created when the last is final). A child's rusage
counts from its fork: what the fork server did before is not in it. Medians per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Stack, fresh_postgres, postgres_env, wait_until

FLOWS = '''
import json, os, resource
from pathlib import Path
from orchestrator import flow

@flow
def probe() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(os.environ["PROBE_DIR"], os.environ["ORCH_FLOW_RUN_ID"]).write_text(json.dumps(
        {"cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000, "minflt": usage.ru_minflt, "ppid": os.getppid()}))
'''


def one_round(code: Path, args: argparse.Namespace) -> dict[str, float]:
    from orchestrator import schemas

    database_url, broker_url = fresh_postgres(args.database, args.redis_db)
    root = Path(tempfile.mkdtemp(prefix="forked-run-cost-"))
    out = root / "out"
    out.mkdir()
    stack = Stack(root, {**postgres_env(database_url, broker_url), "PYTHONPATH": str(code),
                         "PROBE_DIR": str(out)})
    try:
        stack.start_server()
        assert stack.orch("work-pool", "create", "bench", "--type", "process").returncode == 0
        (stack.project / "flows.py").write_text(FLOWS)
        deployed = stack.python('from flows import probe; print(probe.deploy(name="d", work_pool_name="bench"))')
        assert deployed.returncode == 0, deployed.stderr
        deployment = stack.client.read_deployment_by_name("probe/d")
        worker = stack.start_worker("bench", "--limit", "8")
        time.sleep(3)  # the fork server ready, as at idle
        for _ in range(args.runs):
            run = stack.client.create_flow_run(deployment.id, schemas.FlowRunCreate())
            wait_until("the run final", lambda r=run: stack.client.read_flow_run(r.id).state.type == "COMPLETED",
                       60, 0.02)
        probes = [json.loads(p.read_text()) for p in out.iterdir()]
        forked = [p for p in probes if p["ppid"] != worker.pid]  # started by the fork server
        return {"cpu_ms": statistics.median(p["cpu_ms"] for p in forked),
                "minflt": statistics.median(p["minflt"] for p in forked),
                "forked": len(forked), "runs": len(probes)}
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database", default="orch_h4_forked")
    parser.add_argument("--redis-db", type=int, default=42)
    args = parser.parse_args()
    for i in range(args.rounds):
        for code in args.code:
            result = one_round(code.resolve(), args)
            print(f"round {i + 1} {code}: load {os.getloadavg()[0]:.1f}: {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
