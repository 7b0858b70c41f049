"""What the fork server's preloading costs in memory and saves per run (issue 22).

In one process: preload ``--preload`` (Python statements; default: nothing), ``gc.freeze()``, then
fork ``--forks`` children that each do what a forked flow-run process needs before its flow is
called (``--child``, default: the fork server's imports and rehearsal, as
``orchestrator/runtime/forkserver.py`` does them) and leave with ``os._exit``. Prints the memory the
preload added to the server (RSS) and the median CPU (user + system, ``os.wait4``) of a child.

Usage: python bench/forkserver_preload.py [--preload "import pydantic, orchestrator.schemas"] [--forks 15]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
from pathlib import Path

FULL = ("import orchestrator.parameters, orchestrator.runtime.engine, orchestrator.schemas, orchestrator.sdk.flows\n"
        "from orchestrator.runtime.forkserver import _rehearse\n_rehearse()")


def rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def child_cpu_ms(code: str, forks: int) -> float:
    spent = []
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            exec(code)  # noqa: S102 - the bench's own statements
            os._exit(0)
        _, _, usage = os.wait4(pid, 0)
        spent.append((usage.ru_utime + usage.ru_stime) * 1000)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preload", default="pass", help='statements the server runs first ("full": all)')
    parser.add_argument("--child", default=FULL, help="statements each child runs (default: the server's imports)")
    parser.add_argument("--forks", type=int, default=15)
    args = parser.parse_args()
    preload = FULL if args.preload == "full" else args.preload
    before = rss_mb()
    exec(preload)  # noqa: S102
    gc.freeze()
    added = rss_mb() - before
    cpu = child_cpu_ms(args.child, args.forks)
    print(f"preload {args.preload[:60]!r}: server RSS {rss_mb():.1f} MB (+{added:.1f}); child CPU median {cpu:.1f} ms "
          f"over {args.forks} forks (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
