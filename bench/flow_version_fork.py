"""A flow's default version (``Flow.run_version``: its source's hash) as a flow-run process pays it:
in a child forked from a process that imported what the fork server imports and ran its rehearsal
(``runtime/forkserver.py``), then ``gc.freeze``, the flow's file loaded as the engine loads it.

    PYTHONPATH=<tree> python bench/flow_version_fork.py [--forks 80]

Each child times ``run_version`` alone: its thread's CPU and its minor page faults (copy-on-write of
the fork server's pages), which machine load disturbs less than wall time; p50 and min over the
forks. Run it for the old and the new tree in turn (issue 22, bench/RESULTS.md, "run_version").
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

FLOWS_PY = '''"""A no-op flow, as bench/compare.py's."""

from orchestrator import flow


@flow
def noop() -> None:
    pass
'''


def child(folder: str, out: int) -> None:
    from orchestrator.runtime.entrypoint import load_entrypoint

    flow = load_entrypoint("flows.py:noop", folder)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.thread_time()
    version = flow.run_version()
    cpu = time.thread_time() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    os.write(out, f"{cpu * 1e3:.4f} {faults} {version}".encode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--forks", type=int, default=80)
    args = parser.parse_args()

    from orchestrator.runtime import forkserver

    forkserver._rehearse()  # what the fork server does once before its first fork
    gc.freeze()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "flows.py").write_text(FLOWS_PY)
        for _ in range(args.forks):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                child(folder, write)
                os._exit(0)
            os.close(write)
            rows.append(os.read(read, 200).decode().split())
            os.close(read)
            os.waitpid(pid, 0)
    cpu = [float(row[0]) for row in rows]
    faults = [int(row[1]) for row in rows]
    print(
        f"run_version in a forked child, {args.forks} forks: CPU p50 {statistics.median(cpu):.3f} ms, "
        f"min {min(cpu):.3f}; minor faults p50 {statistics.median(faults):.0f}; version {rows[0][2]}; "
        f"load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
