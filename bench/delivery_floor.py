"""The delivery hop alone (issue 22): a run's message LPUSHed onto Redis -> the consumer's task body, for a
bare redis-py ``BLPOP`` loop, a bare Celery app and ours, one message at a time.

    python bench/delivery_floor.py [--consumers blpop,celery,ours] [--code PATH ...] [--runs 200] [--gap 0.02]
                                   [--rounds 2] [--redis-db 24] [--monitor] [--callgrind]

Each consumer is a subprocess that appends ``time.time() run_id`` to a file in its body; the bench LPUSHes
the message the server publishes (``pools.publish.task_message``: Celery's protocol 2 in kombu's envelope)
with the server's own connection (``pools.resp``), time taken just before, so one clock gives the latency.

* ``blpop``: redis-py ``BLPOP`` in a loop, the message's JSON and base64 body decoded (the floor's bare
  worker, bench/run_floor.py, does a ``BLPOP`` itself);
* ``celery``: a Celery app with Celery's defaults but JSON, consumed as ``workers/celery_worker.serve``
  runs its worker (threads pool, concurrency 8, no gossip, mingle or heartbeat, ``optimization="fair"``);
* ``ours``: the same worker options on our app (``pools.broker.celery_app``) and a task whose body is what
  ``serve``'s task does before ``BaseWorker.handle`` (``uuid.UUID(run_id)``). ``--code PATH`` (repeatable)
  runs ``ours`` from each checkout, as ``ours@PATH``, alternating with the others in every round.

Counted per delivery (after 20 to warm up): the consumer process's CPU (the sum of its threads'
``/proc/<pid>/task/*/schedstat`` run time, ns; the same window's idle CPU, measured before, taken off),
per thread kind (the consumer's main thread, the pool's threads, others); ``--monitor``: the Redis commands
in the bench's db (``MONITOR``), by name; ``--callgrind``: the consumer under callgrind
(``/root/.pyenv/versions/3.11.7/bin/python``), every thread's instructions from the warm-up's end to the last
delivery (``callgrind_control -z`` / ``-d``), the same time's idle instructions (a second's, before) taken off,
per delivery (``DF_KEEP=DIR`` keeps the dumps there, for ``callgrind_annotate``). Wall: p50 / p95 ms, with the load average.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

WARM = 20
QUEUE = "orch/pool/bench-delivery/default"

CONSUMER = r"""
import os, sys, time, uuid
MODE, URL, QUEUE, OUT = os.environ["DF_MODE"], os.environ["DF_URL"], os.environ["DF_QUEUE"], os.environ["DF_OUT"]
out = open(OUT, "a", buffering=1)


def mark(run):
    out.write(f"{time.time():.6f} {run}\n")


if MODE == "blpop":
    import base64, json, redis
    client = redis.Redis.from_url(URL)
    while True:
        item = client.blpop(QUEUE, timeout=1)
        if item:
            mark(json.loads(base64.b64decode(json.loads(item[1])["body"]))[0][0])
else:
    from celery import Celery
    if MODE == "celery":
        app = Celery("floor", broker=URL, set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                        worker_hijack_root_logger=False, worker_redirect_stdouts=False)
    else:
        from pools.broker import celery_app
        app = celery_app(URL, name="orchestrator-worker-bench")
    if os.environ.get("DF_CONF"):  # --conf: settings tried on top (transport options merged)
        import json
        conf = json.loads(os.environ["DF_CONF"])
        options = conf.pop("broker_transport_options", {})
        app.conf.update(conf, broker_transport_options={**app.conf.broker_transport_options, **options})

    @app.task(name="orchestrator.run_flow", ignore_result=True)
    def run_flow(run_id):
        mark(uuid.UUID(run_id))

    app.Worker(queues=[QUEUE], concurrency=8, pool="threads", hostname="delivery@bench", loglevel="WARNING",
               quiet=True, without_gossip=True, without_mingle=True, without_heartbeat=True,
               optimization="fair").start()
"""


def thread_cpu(pid: int) -> dict[str, int]:
    """ns of CPU by thread kind: main (the consumer's loop), pool (Celery's ThreadPoolExecutor), other."""
    out: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except OSError:
            continue
        kind = "main" if tid == str(pid) else "pool" if name.startswith("ThreadPool") else name
        out[kind] += ns
    return dict(out)


def marks(path: Path) -> dict[str, float]:
    found = {}
    if path.exists():
        for line in path.read_text().splitlines():
            at, run = line.split()
            found[run] = float(at)
    return found


class Monitor:
    """Redis commands in one db, by name, while counting (``MONITOR``)."""

    def __init__(self, port: int, db: int) -> None:
        self.db = db
        self.counts: collections.Counter[str] = collections.Counter()
        self.counting = False
        self.process = subprocess.Popen(
            ["redis-cli", "-p", str(port), "monitor"], stdout=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split(" ", 3)
            if self.counting and len(parts) == 4 and parts[1] == f"[{self.db}":
                self.counts[parts[3].split(" ", 1)[0].strip().strip('"').upper()] += 1

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def one(
    consumer: str,
    code: str,
    conf: str,
    args: argparse.Namespace,
    work: Path,
    toggle: bool,
    monitor: Monitor | None,
) -> dict[str, object]:
    sys.path.insert(0, code)
    from pools import resp
    from pools.publish import _origin, task_message

    sys.path.remove(code)
    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    connections = resp.Connections(resp.plain_redis(url))
    connections.call("DEL", QUEUE)
    out = work / f"marks-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        PYTHONPATH=code,
        DF_MODE=consumer,
        DF_URL=url,
        DF_QUEUE=QUEUE,
        DF_OUT=str(out),
        DF_CONF=conf,
    )
    command = [sys.executable, "-c", CONSUMER]
    if toggle:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={work}/callgrind.out.%p",
            "/root/.pyenv/versions/3.11.7/bin/python",
            "-c",
            CONSUMER,
        ]
    # run from the checkout: ``python -c`` puts the current directory first on sys.path
    process = subprocess.Popen(
        command, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        sent: dict[str, float] = {}

        def push() -> str:
            run = uuid.uuid4()
            sent[str(run)] = time.time()
            connections.call("LPUSH", QUEUE, task_message(QUEUE, run, origin=_origin()))
            return str(run)

        def wait_for(run: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while run not in marks(out):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(
                        f"{consumer}: no delivery ({process.poll()}): "
                        f"{process.stderr.read() if process.poll() is not None else ''}"
                    )
                time.sleep(0.002)

        wait_for(push(), 120)  # started and consuming
        for _ in range(WARM - 1):
            wait_for(push(), 30)
            time.sleep(args.gap)
        idle_before = thread_cpu(process.pid)
        if toggle:
            callgrind(process.pid, "-z")
        time.sleep(1.0)
        idle = {
            k: v - idle_before.get(k, 0) for k, v in thread_cpu(process.pid).items()
        }  # ns per second idle
        idle_instructions = callgrind(process.pid, "-d", work) if toggle else 0  # in about 1 s
        first = len(sent)
        if monitor is not None:
            monitor.counting = True
        if toggle:
            callgrind(process.pid, "-z")
        start_cpu, start = thread_cpu(process.pid), time.monotonic()
        for _ in range(args.runs):
            time.sleep(args.gap)
            wait_for(push(), 30)
        elapsed = time.monotonic() - start
        cpu = {
            k: (v - start_cpu.get(k, 0) - idle.get(k, 0) * elapsed) / args.runs / 1e3
            for k, v in thread_cpu(process.pid).items()
        }
        if toggle:
            instructions = callgrind(process.pid, "-d", work) - idle_instructions * elapsed
        if monitor is not None:
            time.sleep(0.2)
            monitor.counting = False
        got = marks(out)
        latencies = [(got[run] - at) * 1e3 for run, at in list(sent.items())[first:]]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        connections.close()
    result: dict[str, object] = {
        "p50": statistics.median(latencies),
        "p95": statistics.quantiles(latencies, n=20)[18],
        "cpu_us": cpu,
        "load": os.getloadavg()[0],
    }
    if toggle:
        result["instructions_k"] = instructions / args.runs / 1e3
    return result


def callgrind(pid: int, action: str, work: Path | None = None) -> int:
    """``callgrind_control`` on the consumer: ``-z`` zeroes every thread's counts, ``-d`` dumps them; the
    instructions dumped."""
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True, timeout=60)
    total = 0
    for path in work.glob(f"callgrind.out.{pid}.*") if work is not None else []:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
        if os.environ.get("DF_KEEP"):  # a directory to keep the dumps in, for callgrind_annotate
            shutil.copy(path, os.environ["DF_KEEP"])
        path.unlink()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", default="blpop,celery,ours")
    parser.add_argument("--code", action="append", default=[])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--redis-db", type=int, default=24)
    parser.add_argument("--monitor", action="store_true")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        help="JSON: Celery settings tried on top of ours (repeatable: one more ``ours`` each)",
    )
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent)
    codes = [str(Path(c).resolve()) for c in args.code] or [here]
    sides = []
    for consumer in args.consumers.split(","):
        if consumer != "ours":
            sides.append((consumer, codes[0], ""))
            continue
        sides += [(consumer, c, "") for c in codes] + [(consumer, codes[-1], conf) for conf in args.conf]
    work = Path(tempfile.mkdtemp(prefix="delivery-floor-"))
    toggle = args.callgrind
    monitor = Monitor(6379, args.redis_db) if args.monitor else None
    try:
        for round_ in range(args.rounds):
            for consumer, code, conf in sides:
                if monitor is not None:
                    monitor.counts.clear()
                r = one(consumer, code, conf, args, work, toggle, monitor)
                name = consumer if consumer != "ours" or len(codes) == 1 else f"ours@{code}"
                name += f" {conf}" if conf else ""
                cpu = r["cpu_us"]
                assert isinstance(cpu, dict)
                line = (
                    f"round {round_ + 1} {name:28} p50 {r['p50']:.2f} p95 {r['p95']:.2f} ms | CPU µs/delivery "
                    + " ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items()))
                    + f" all {sum(cpu.values()):.0f}"
                )
                if "instructions_k" in r:
                    line += f" | {r['instructions_k']:.0f}k instr/delivery"
                if monitor is not None:
                    per = {k: v / args.runs for k, v in monitor.counts.most_common()}
                    line += " | redis/run " + " ".join(f"{k} {v:.2f}" for k, v in per.items())
                print(line + f" | load {r['load']:.1f}", flush=True)
    finally:
        if monitor is not None:
            monitor.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
