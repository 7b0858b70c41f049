"""What the fork server's standby costs a run's claim, counted (issue 22): runs delivered one after
another (``--gap`` seconds apart), each as the process worker meets it: ``ForkServer.prepare`` at
the delivery, then ``--claim`` ms standing for the claim's round trip, then the order (``take``), a
run that ends at once (a refused run id: no API needed). Per run, from the kernel's per-task
counters (``/proc/<pid>/task/<tid>/schedstat``: CPU ns; ``/proc/<pid>/stat``: minor faults): the
CPU the fork server and its standbys used *during the claim window* (what competes with the claim
for the cores), whether a standby was forked in it, and their CPU over the whole run.

Usage: python bench/standby_window.py [--code PATH] [--runs 30] [--gap 0.3] [--claim 10]
(``--code``: the checkout whose fork server is measured; this one by default.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def cpu_ms(pid: int) -> float:
    """CPU of every thread of ``pid`` so far (0 once it is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0]) for t in tasks) / 1e6
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.3)
    parser.add_argument("--claim", type=float, default=10.0, help="ms between the delivery and the order")
    parser.add_argument("--code", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args()
    sys.path.insert(0, args.code)  # before bench/ (its workers.py)
    os.environ["PYTHONPATH"] = args.code  # the fork server it starts: the same checkout
    from workers.forkserver import ForkServer

    forks = ForkServer()
    assert forks.wait_ready(60)
    server = forks.server_pid
    assert server is not None
    window: list[float] = []
    whole: list[float] = []
    forked = 0
    try:
        for i in range(args.runs):
            held = {pid: cpu_ms(pid) for pid in children(server)}
            server_before = cpu_ms(server)
            forks.prepare()  # the delivery
            time.sleep(args.claim / 1000)  # the claim at the API
            forked += bool(children(server) - set(held))
            window.append(cpu_ms(server) - server_before
                          + sum(cpu_ms(pid) - held.get(pid, 0.0) for pid in children(server)))
            ordered = forks.standbys[-1:]  # the standby the order goes to (``take``: the newest), if any
            before_order = {pid: cpu_ms(pid) - held.get(pid, 0.0) for pid in ordered}
            process = forks.take({"ORCH_FLOW_RUN_ID": f"refused-{i}"}, None)
            assert process is not None and process.stdout is not None
            process.stdout.read()
            process.stdout.close()
            process.wait(60)
            time.sleep(args.gap)
            # The run's own process is left out (the same either way): the server's CPU, the run's
            # standby's before its order, and any other standby's (a spare for the next run).
            others = sum(cpu_ms(pid) - held.get(pid, 0.0) for pid in children(server) if pid != process.pid)
            whole.append(cpu_ms(server) - server_before + sum(before_order.values()) + others)
    finally:
        forks.close()
    print(f"{args.runs} runs, gap {args.gap} s, claim {args.claim} ms, load {os.getloadavg()[0]:.1f}: "
          f"standby forked during the claim in {forked}; CPU ms of the fork server and its standbys "
          f"during the claim p50 {statistics.median(window):.2f} (p90 "
          f"{statistics.quantiles(window, n=10)[-1]:.2f}); from one delivery to the next p50 "
          f"{statistics.median(whole):.2f}")


if __name__ == "__main__":
    main()
