"""A server's whole start, exec → first health 200, in instructions (what a loaded machine does not move).

    python bench/start_instructions.py TREE[,TREE...] [--rounds 1] [--database orch_bench_start_cg]
                                       [--redis-db 12]

Each TREE is a checkout (its ``orch server start``), ``floor`` (bench/start_floor.py's bare app) or
``stack`` (its server stack floor: pydantic-settings, the ORM with one mapped table, the broker reached).
Per round and tree, alternating: a new PostgreSQL database and Redis db, a first start that migrates
it (not measured), then a restart under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``): once its
health route answers 200, ``callgrind_control --dump`` writes the instructions of every thread of the
process since exec (the imports, the app, the database check, the services' first passes, the
health request and its connection), and the server is stopped. bench/start_modules.py splits the
imports by module; bench/start_cpu.py gives CPU and wall time, which follow the machine's load.
Under valgrind a start takes ~40 s.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import start_trees
from start_floor import healthy

from tests.harness import free_port, fresh_postgres

# valgrind's own build of the interpreter (the pyenv shim is a shell script)
PYTHON = "/root/.pyenv/versions/3.11.7/bin/python" if Path("/root/.pyenv/versions/3.11.7/bin/python").exists() \
    else sys.executable


def start(argv: list[str], env: dict[str, str], out: Path | None, cwd: Path) -> int | None:
    """Start ``argv`` in ``cwd`` (under callgrind when ``out`` is given) until health answers; the
    instructions since exec (None unless under callgrind); then stop it."""
    if out is not None:
        argv = ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}", *argv]
    # ``python -m`` puts the working directory first on sys.path: not a checkout's, or its code would win
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        # One request waited for as long as the start takes: ``orch server start`` listens before it
        # imports the API, so a request with a short timeout, sent again and again, would leave a
        # queue of them for the server to answer once it serves, each counted (~3 M instructions).
        while not healthy(int(argv[argv.index("--port") + 1]), timeout=600):
            if proc.poll() is not None:
                raise RuntimeError(f"{argv}: exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv}: no health answer within 600 s")
            time.sleep(0.05)
        if out is None:
            return None
        subprocess.run(["callgrind_control", "--dump=health", str(proc.pid)], check=True, capture_output=True,
                       timeout=300)
        dumps = [Path(f) for f in glob.glob(f"{out}.*")]
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        for line in dumps[0].read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError(f"no total in {dumps[0]}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for leftover in glob.glob(f"{out}*") if out is not None else []:
            os.remove(leftover)


def main() -> None:
    args = start_trees.parser(__doc__.splitlines()[0], trees="comma-separated checkouts, 'floor' or 'stack'",
                              rounds=1, database="orch_bench_start_cg").parse_args()
    trees, folder = start_trees.ready(args.trees, "start-instructions-")
    print(f"load average {os.getloadavg()[0]:.2f}; a restart each, exec -> health, all threads", flush=True)
    for tree in start_trees.turns(trees, args.rounds):
        env = start_trees.environment(tempfile.mkdtemp(prefix="start-instructions-home-"),
                                      *fresh_postgres(args.database, args.redis_db))
        env["PYTHONHASHSEED"] = "0"
        port = str(free_port())
        if tree in start_trees.FLOORS:
            env.update(PYTHONPATH=str(folder), FLOOR_STACK="1" if tree == "stack" else "")
            argv = [PYTHON, "-m", "uvicorn", f"{tree}app:app", "--port", port, "--log-level", "warning"]
        else:
            env["PYTHONPATH"] = tree
            argv = [PYTHON, "-m", "orchestrator.cli.main", "server", "start", "--port", port]
        start(argv, env, None, folder)  # a new database made and migrated: the measured start is a restart
        total = start(argv, env, folder / f"callgrind.{os.getpid()}", folder)
        assert total is not None
        print(f"  {tree}: {total / 1e6:,.0f} M instructions", flush=True)

if __name__ == "__main__":
    main()
