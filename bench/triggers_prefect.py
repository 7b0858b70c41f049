"""Triggers side by side with Prefect 3.9.1 (its server evaluates deployment triggers too): the same
automations and the same event sequence sent to both servers, then the runs each created counted per
automation, event -> run created latency, and the evaluation rate of a burst.

Both servers on PostgreSQL (ours with Redis, ``harness.Stack``; Prefect's ``prefect server start`` in
a temporary PREFECT_HOME with ``PREFECT_API_DATABASE_CONNECTION_URL``, as bench/compare/prefect_side.py
starts it, analytics off). No worker: the runs are created on a pool nobody serves, so only the
trigger's path is measured (event stored, evaluated, fired, run created).

* **automations**: for each of ``bench.e0`` .. ``bench.e2``: every event (threshold 1), threshold 5
  within 60 s, ``for_each`` resource threshold 3 within 60 s, and a compound "all within 60 s" of it
  and the next name; each runs the ``burst`` deployment with parameters ``{"n": <automation index>}``,
  so the runs per automation are counted from the runs' parameters. The definitions are sent to both
  as written for Prefect (``prefect.resource.id``, ``source: selected``): ours reads Prefect's names.
* **burst**: ``--events`` events (names ``bench.e<i % 4>``, resources ``bench.thing.<i % 5>``,
  ``occurred`` 10 ms apart) in one POST; the rate is events / (POST -> the last run created), the
  runs counted until their number stops changing for ``--settle`` seconds (bounded by ``--timeout``).
* **latency**: ``--latency`` times one ``bench.go`` event (``occurred`` = when sent), then the runs of
  the ``go`` deployment read until one more exists; its ``created`` - sent.

Usage: python bench/triggers_prefect.py [--events 200] [--latency 20]. Prints Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare.common import free_port, wait_until
from compare.prefect_side import PREFECT, PY, VERSION, ensure_venv, prefect_env

from tests import harness

OURS_DB, PREFECT_DB, REDIS_DB = "ht_bench_triggers_ours", "ht_bench_triggers_prefect", 14
NAMES = 3  # bench.e0 .. e2 each have four automations; e3 is only a compound's second child
FLOW = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def noop(n: int = 0) -> int:
        return n
''')
PREFECT_DEPLOY = textwrap.dedent('''
    import json, os
    from prefect import flow
    here = os.getcwd()
    ids = {name: str(flow.from_source(source=here, entrypoint="flows.py:noop").deploy(
        name=name, work_pool_name="idle", print_next_steps=False, ignore_warnings=True)) for name in ("go", "burst")}
    print(json.dumps(ids))
''')
PREFECT_FLOW = textwrap.dedent('''
    from prefect import flow

    @flow
    def noop(n: int = 0) -> int:
        return n
''')


def automations(burst: str, go: str) -> list[dict[str, Any]]:
    """The automations, as Prefect's API takes them (ours takes the same JSON)."""
    def event(name: str, **more: Any) -> dict[str, Any]:
        return {"type": "event", "expect": [name], "posture": "Reactive", "threshold": 1, "within": 0, **more}

    shapes = []
    for k in range(NAMES):
        name, following = f"bench.e{k}", f"bench.e{k + 1}"
        shapes += [event(name), event(name, threshold=5, within=60),
                   event(name, for_each=["prefect.resource.id"], threshold=3, within=60),
                   {"type": "compound", "require": "all", "within": 60, "triggers": [event(name), event(following)]}]
    out = [{"name": f"a{i}", "trigger": trigger, "actions": [
        {"type": "run-deployment", "source": "selected", "deployment_id": burst, "parameters": {"n": i}}]}
        for i, trigger in enumerate(shapes)]
    out.append({"name": "go", "trigger": event("bench.go"), "actions": [
        {"type": "run-deployment", "source": "selected", "deployment_id": go, "parameters": {"n": -1}}]})
    return out


def burst_events(count: int) -> list[dict[str, Any]]:
    start = dt.datetime.now(dt.UTC)
    return [{"id": str(uuid.uuid4()), "event": f"bench.e{i % 4}", "occurred": (start + dt.timedelta(
        milliseconds=10 * i)).isoformat(), "resource": {"prefect.resource.id": f"bench.thing.{i % 5}"},
        "related": [], "payload": {"i": i}} for i in range(count)]


class Server:
    """What the bench needs of either server: post, and the runs of a deployment."""

    label = ""
    go = burst = ""  # the deployments' ids

    def post(self, path: str, body: Any) -> Any:
        raise NotImplementedError

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        """Every run of ``deployment``: ``{"n", "created"}`` (created: epoch seconds)."""
        raise NotImplementedError

    def count(self, deployment: str) -> int:
        return len(self.runs(deployment))

    def stop(self) -> None:
        raise NotImplementedError

    def logs(self) -> str:
        return ""


class Ours(Server):
    label = "ours (PostgreSQL + Redis)"

    def __init__(self, root: Path) -> None:
        database_url, broker_url = harness.fresh_postgres(OURS_DB, REDIS_DB)
        self.stack = harness.Stack(root, harness.postgres_env(database_url, broker_url))
        self.stack.start_server()
        self.stack.orch("work-pool", "create", "idle", "--type", "process")
        (self.stack.project / "flows.py").write_text(FLOW)
        done = self.stack.python('import json; from flows import noop; print(json.dumps([str(noop.deploy(name=n, '
                                 'work_pool_name="idle")) for n in ("go", "burst")]))')
        self.go, self.burst = json.loads(done.stdout.strip().splitlines()[-1])

    def post(self, path: str, body: Any) -> Any:
        import urllib.error

        try:
            return self.stack.post(path, body)
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{path}: {error.code} {error.read()[:1000]!r}") from None

    def count(self, deployment: str) -> int:
        return int(self.stack.get(f"/flow_runs?deployment_id={deployment}&limit=1")["total"])

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.stack.get(f"/flow_runs?deployment_id={deployment}&limit=1000&offset={len(out)}")
            out += [{"n": r["parameters"].get("n"), "created": dt.datetime.fromisoformat(r["created"]).timestamp()}
                    for r in page["items"]]
            if not page["items"] or len(out) >= page["total"]:
                return out

    def stop(self) -> None:
        self.stack.stop()

    def logs(self) -> str:
        return str(self.stack.all_logs())[-6000:]


class Prefect(Server):
    label = f"Prefect {VERSION} (PostgreSQL)"

    def __init__(self, root: Path) -> None:
        from orchestrator.client import Client

        ensure_venv()
        harness.fresh_postgres(PREFECT_DB, REDIS_DB)
        self.root, self.port = root, free_port()
        self.api = Client(f"http://127.0.0.1:{self.port}/api", timeout=60.0, retry_seconds=60.0)
        self.env = prefect_env(root / "home", f"http://127.0.0.1:{self.port}/api",
                               PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/"
                                                                   f"{PREFECT_DB}")
        self.log = open(root / "prefect-server.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.server = subprocess.Popen([str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port",
                                        str(self.port)], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("Prefect's server health", self._healthy, 180, 0.1)
        self._cli("work-pool", "create", "idle", "--type", "process")
        flows = root / "flows"
        flows.mkdir()
        (flows / "flows.py").write_text(PREFECT_FLOW)
        (flows / "deploy.py").write_text(PREFECT_DEPLOY)
        done = subprocess.run([str(PY), "deploy.py"], cwd=flows, env=self.env, capture_output=True, text=True,
                              timeout=300, check=True)
        ids = json.loads(done.stdout.strip().splitlines()[-1])
        self.go, self.burst = ids["go"], ids["burst"]

    def _healthy(self) -> bool:
        if self.server.poll() is not None:
            raise RuntimeError(f"Prefect's server exited: {(self.root / 'prefect-server.log').read_text()[-2000:]}")
        try:
            return self.api.request("GET", "/health", timeout=2) is not None
        except Exception:  # noqa: BLE001 -- still starting
            return False

    def _cli(self, *args: str) -> None:
        subprocess.run([str(PREFECT), *args], env=self.env, capture_output=True, text=True, timeout=180, check=True)

    def post(self, path: str, body: Any) -> Any:
        return self.api.request("POST", path if path != "/automations" else "/automations/", body=body)

    def count(self, deployment: str) -> int:
        return int(self.api.request("POST", "/flow_runs/count", body={
            "deployments": {"id": {"any_": [deployment]}}}))

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.api.request("POST", "/flow_runs/filter", body={
                "deployments": {"id": {"any_": [deployment]}}, "limit": 200, "offset": len(out)})
            out += [{"n": r["parameters"].get("n"), "created": dt.datetime.fromisoformat(r["created"]).timestamp()}
                    for r in page]
            if len(page) < 200:
                return out

    def logs(self) -> str:
        return (self.root / "prefect-server.log").read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        self.server.terminate()
        try:
            self.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(timeout=10)
        self.api.close()
        self.log.close()


def latency(server: Server, count: int, timeout: float) -> list[float]:
    """Event -> run created, ms, one event at a time (2 warm-up events first)."""
    out = []
    for n in range(count + 2):
        before = server.count(server.go)
        sent = time.time()
        server.post("/events", [{"id": str(uuid.uuid4()), "event": "bench.go", "occurred": dt.datetime.fromtimestamp(
            sent, dt.UTC).isoformat(), "resource": {"prefect.resource.id": "bench.go"}, "related": [], "payload": {}}])
        wait_until(f"{server.label}: the run of event {n}", lambda before=before: server.count(server.go) > before,
                   timeout, 0.01, describe=server.logs)
        if n >= 2:
            newest = max(r["created"] for r in server.runs(server.go))
            out.append((newest - sent) * 1000)
    return out


def burst(server: Server, count: int, settle: float, timeout: float) -> tuple[Counter[int], float]:
    """POST the events at once (``occurred`` from now: the same sequence for both); wait until the
    runs stop coming; runs per automation, events/s."""
    events = burst_events(count)
    sent = time.time()
    for start in range(0, len(events), 1000):
        server.post("/events", events[start:start + 1000])
    seen, changed = -1, time.time()
    while time.time() - changed < settle and time.time() - sent < timeout:
        now = server.count(server.burst)
        if now != seen:
            seen, changed = now, time.time()
        time.sleep(0.2)  # a poll of a count: there is no event to await across two servers
    runs = server.runs(server.burst)
    last = max((r["created"] for r in runs), default=sent)
    return Counter(r["n"] for r in runs), len(events) / max(last - sent, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds with no new run that end a burst")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of one burst (Prefect is slow)")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as root:
        for make in (Ours, Prefect):
            home = Path(root) / make.__name__
            home.mkdir()
            server = make(home)
            try:
                for automation in automations(server.burst, server.go):
                    server.post("/automations", automation)
                lat = latency(server, args.latency, 120)
                per, rate = burst(server, args.events, args.settle, args.timeout)
                results[server.label] = {"latency": lat, "per": per, "rate": rate}
            finally:
                server.stop()
    labels = list(results)
    print(f"\n`python bench/triggers_prefect.py --events {args.events} --latency {args.latency}` — "
          f"{os.cpu_count()} cores, load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(f"| figure | {' | '.join(labels)} |\n|---|{'---|' * len(labels)}")
    for q, name in ((0.5, "p50"), (0.95, "p95")):
        values = [sorted(r["latency"])[min(len(r["latency"]) - 1, int(len(r["latency"]) * q))] for r in results.values()]
        print(f"| event → run created {name}, one event at a time (ms) | {' | '.join(f'{v:.0f}' for v in values)} |")
    print(f"| burst of {args.events} events: runs created | "
          f"{' | '.join(str(sum(r['per'].values())) for r in results.values())} |")
    rates = " | ".join(f"{r['rate']:.1f}" for r in results.values())
    print(f"| burst: events/s (POST → last run created) | {rates} |")
    shapes = ["every event", "threshold 5 / 60 s", "for_each, 3 / 60 s", "compound all / 60 s"]
    print("\nRuns per automation (a<i>: name bench.e<i // 4>, shape):\n")
    print(f"| automation | {' | '.join(labels)} | same |\n|---|{'---|' * len(labels)}---|")
    for i in range(NAMES * 4):
        counts = [r["per"].get(i, 0) for r in results.values()]
        print(f"| a{i} (bench.e{i // 4}, {shapes[i % 4]}) | {' | '.join(map(str, counts))} | "
              f"{'yes' if len(set(counts)) == 1 else 'NO'} |")
    print(f"\nmedian latencies: {[statistics.median(r['latency']) for r in results.values()]}")


if __name__ == "__main__":
    main()
