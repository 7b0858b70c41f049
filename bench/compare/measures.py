"""The measurements. Each takes the sides (anything with ``compare.common.Side``'s methods) and
returns plain numbers; where it makes sense, runs alternate between the sides so that a change in the
machine's load hits all of them alike. Every wait is bounded."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from compare.common import (
    FINAL,
    Side,
    cpu_seconds,
    kill_tree,
    others_stopped,
    pid_gone,
    tree_pss_mb,
    tree_rss_mb,
)

# Seconds a side is given, once the others are stopped, before its figure is taken (``Turns``): it
# was stopped itself while another side was measured, and the timers that fell due meanwhile
# (heartbeats, service passes, pollers) fire as it resumes. After a long stop (``LONG_STOP`` or more
# since its last turn: Prefect's runs, ~10 s each, or its batch) more: a held request of our worker
# (the cancellation long-poll, answered within 30 s, its client's timeout 30 s later) may have timed
# out on the client's clock, and the worker listens again 1 s later; the API client's retries wait up
# to 2 s; a worker judged silent by the reaper takes its name back at its next beat.
SETTLE, LONG_STOP, LONG_SETTLE = 0.5, 20.0, 3.0


class Turns:
    """Each side's figures taken alone: in its turn, the other sides' processes stopped
    (``others_stopped``), the side given ``SETTLE`` (``LONG_SETTLE`` after a long stop) to catch up
    on its own stop first. One ``Turns`` for all the phases that take turns: it counts how long each
    side was stopped since its last turn, across them."""

    def __init__(self, sides: Sequence[Side]) -> None:
        self.sides = sides
        self.stopped = {id(side): 0.0 for side in sides}  # seconds stopped since the side's last turn

    @contextlib.contextmanager
    def of(self, side: Side) -> Iterator[None]:
        settle = LONG_SETTLE if self.stopped[id(side)] >= LONG_STOP else SETTLE
        began = time.monotonic()
        try:
            with others_stopped(self.sides, side, settle):
                yield
        finally:
            took = time.monotonic() - began
            for other in self.sides:
                self.stopped[id(other)] = 0.0 if other is side else self.stopped[id(other)] + took


    @contextlib.contextmanager
    def joined(self, side: Side) -> Iterator[None]:
        """``side`` takes turns with the others for the block (a floor measured in the same
        rotation as the systems: after the same stops and idle gaps)."""
        self.sides = [*self.sides, side]
        self.stopped[id(side)] = 0.0
        try:
            yield
        finally:
            self.sides = [other for other in self.sides if other is not side]
            del self.stopped[id(side)]


def rotated(sides: Sequence[Side], i: int) -> list[Side]:
    """Round ``i``'s order: each side goes first in turn."""
    k = i % len(sides)
    return [*sides[k:], *sides[:k]]


def create_to_final(sides: Sequence[Side], runs: int, warmup: int = 2, *,
                    turns: Turns | None = None, gap: float = 0.0,
                    cpu: bool = False) -> dict[str, dict[str, list[float]]]:
    """One no-op run at a time, alternating sides: POST sent (client clock) -> the server's
    start_time (RUNNING) and end_time (COMPLETED). Same machine, same clock. ``turns``: each run
    taken alone (``Turns``). ``gap``: seconds idle before each run. ``cpu``: also each run's CPU
    seconds of the side's processes (server, worker and their children, the finished ones reaped;
    from POST sent to the final state read: a process still exiting counts in its side's next run)."""
    out: dict[str, dict[str, list[float]]] = {s.label: {"running": [], "completed": [], "cpu": []} for s in sides}
    for i in range(warmup + runs):
        for side in rotated(sides, i):
            time.sleep(gap)
            with turns.of(side) if turns else contextlib.nullcontext():
                before = cpu_seconds(side.processes(), reaped=True) if cpu else 0.0
                sent = time.time()
                run_id = side.create_run("noop")
                info = side.wait_final(run_id, 180)
                spent = cpu_seconds(side.processes(), reaped=True) - before if cpu else 0.0
            if info["state"] != "COMPLETED":
                raise RuntimeError(f"{side.label}: run {run_id} ended {info['state']}")
            if i >= warmup:
                out[side.label]["running"].append(info["start"] - sent)
                out[side.label]["completed"].append(info["end"] - sent)
                if cpu:
                    out[side.label]["cpu"].append(spent)
    return out


def batches(sides: Sequence[Side], count: int, rounds: int, timeout: float,
            repeat_under: float = 60.0, *, turns: Turns | None = None) -> dict[str, dict[str, Any]]:
    """``batch`` ``rounds`` times per side, sides alternating; a side whose first batch took
    ``repeat_under`` seconds or more is measured once (more would add minutes, not accuracy that
    matters). Each side's figures are its median batch's (by runs per minute), with every round's
    rate beside them. ``turns``: each batch taken alone."""
    results: dict[str, list[dict[str, float]]] = {s.label: [] for s in sides}
    for i in range(rounds):
        for side in rotated(sides, i):
            done = results[side.label]
            if done and not done[0]["makespan"] < repeat_under:  # NaN (timed out) counts as slow
                continue
            with turns.of(side) if turns else contextlib.nullcontext():
                done.append(batch(side, count, timeout))
    out: dict[str, dict[str, Any]] = {}
    for label, done in results.items():
        ranked = sorted(done, key=lambda r: r["per_minute"])
        out[label] = {**ranked[(len(ranked) - 1) // 2], "rounds_per_minute": [r["per_minute"] for r in done]}
    return out


def batch(side: Side, count: int, timeout: float) -> dict[str, float]:
    """``count`` no-op runs created at once, the worker's limit 8: first POST -> last end_time."""
    base = side.count_final("noop")
    sent = time.time()
    ids = [side.create_run("noop") for _ in range(count)]
    created = time.time() - sent
    deadline = time.monotonic() + timeout
    while side.count_final("noop") - base < count:
        side.check_alive()
        if time.monotonic() > deadline:
            done = side.count_final("noop") - base
            return {"makespan": float("nan"), "per_minute": done / timeout * 60, "failed": float("nan"),
                    "created": created, "timed_out": timeout}
        time.sleep(0.5)
    infos = [side.read_run(run_id) for run_id in ids]
    makespan = max(i["end"] or 0 for i in infos) - sent
    return {"makespan": makespan, "per_minute": count / makespan * 60, "created": created,
            "failed": float(sum(i["state"] != "COMPLETED" for i in infos))}


def create_api(side: Side, sequential: int, clients: int, per_client: int) -> tuple[dict[str, Any], list[str]]:
    """Create-run API throughput on a deployment whose pool nobody serves: ``sequential`` POSTs one
    after the other, then ``clients`` threads (one keep-alive connection each) sending ``per_client``."""
    ids: list[str] = []
    errors: list[str] = []
    began = time.perf_counter()
    for _ in range(sequential):
        try:
            ids.append(side.create_run("idle", strict=True))
        except Exception as error:  # noqa: BLE001 - an answer >= 400 or a dropped connection: an error to count
            errors.append(f"{type(error).__name__}: {error}"[:200])
    seq_rate = len(ids) / (time.perf_counter() - began)
    seq_errors = len(errors)
    errors = []
    lock = threading.Lock()
    gate = threading.Barrier(clients + 1)

    def client() -> None:
        gate.wait(timeout=60)
        for _ in range(per_client):
            try:
                run_id = side.create_run("idle", strict=True)
            except Exception as error:  # noqa: BLE001 - an answer >= 400 or a dropped connection: an error to count
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:200])
            else:
                with lock:
                    ids.append(run_id)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait(timeout=60)
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout=600)
    elapsed = time.perf_counter() - began
    ok = clients * per_client - len(errors)
    return {"sequential_per_s": seq_rate, "sequential_errors": float(seq_errors), "concurrent_per_s": ok / elapsed,
            "concurrent_errors": float(len(errors)), "concurrent_seconds": elapsed,
            "error_samples": sorted(set(errors))[:3]}, ids


def cancel_running(sides: Sequence[Side], rounds: int, bound: float = 120.0, *,
                   turns: Turns | None = None) -> dict[str, dict[str, list[float]]]:
    """A RUNNING sleeper run is cancelled through the API: request sent -> its process gone, -> CANCELLED.
    ``turns``: each round (start, cancel, its end) taken alone."""
    out: dict[str, dict[str, list[float]]] = {s.label: {"gone": [], "cancelled": []} for s in sides}
    for i in range(rounds):
        for side in rotated(sides, i):
            with turns.of(side) if turns else contextlib.nullcontext():
                cancel_one(side, bound, out[side.label])
    return out


def cancel_one(side: Side, bound: float, out: dict[str, list[float]]) -> None:
    """One round of ``cancel_running`` on ``side``: appends to ``out["gone"]`` and ``out["cancelled"]``."""
    run_id = side.create_run("sleeper")
    pid = side.wait_running(run_id, 180)["pid"]
    sent = time.time()
    side.cancel(run_id)
    gone = cancelled = None
    deadline = time.monotonic() + bound
    while (gone is None or cancelled is None) and time.monotonic() < deadline:
        if gone is None and pid_gone(pid):
            gone = time.time() - sent
        if cancelled is None:
            state = side.read_run(run_id)["state"]
            if state in FINAL:
                if state != "CANCELLED":
                    raise RuntimeError(f"{side.label}: cancelled run {run_id} ended {state}")
                cancelled = time.time() - sent
        time.sleep(0.02)
    out["gone"].append(gone if gone is not None else float("inf"))
    out["cancelled"].append(cancelled if cancelled is not None else float("inf"))


def kill9(sides: Sequence[Side], bound: float) -> dict[str, dict[str, Any]]:
    """On every side at once: a sleeper run RUNNING, then SIGKILL to its worker and the worker's
    descendants (the flow-run process, any standby) -> seconds until the run is in a final state,
    or the state it still had when ``bound`` ran out."""
    runs = {}
    for side in sides:
        run_id = side.create_run("sleeper")
        runs[side.label] = (side, run_id, side.wait_running(run_id, 180)["pid"])
    out: dict[str, dict[str, Any]] = {}
    killed_at = time.time()
    for side, _, pid in runs.values():
        assert side.worker is not None
        killed = kill_tree(side.worker.pid)
        if pid not in killed:  # a flow-run process outside the worker's tree (own session, reparented)
            kill_tree(pid)
        side.worker.wait(timeout=30)
    pending = dict(runs)
    deadline = time.monotonic() + bound
    while pending and time.monotonic() < deadline:
        for label, (side, run_id, _) in list(pending.items()):
            state = side.read_run(run_id)["state"]
            if state in FINAL:
                out[label] = {"seconds": time.time() - killed_at, "state": state}
                del pending[label]
        time.sleep(0.25)
    for label, (side, run_id, _) in pending.items():
        out[label] = {"seconds": float("inf"), "state": side.read_run(run_id)["state"], "bound": bound}
    return out


def idle_rss(sides: Sequence[Side], settle: float = 5.0) -> dict[str, dict[str, float]]:
    """RSS of each server's and worker's process tree after ``settle`` idle seconds; the worker's
    tree also as PSS (shared pages counted once, ``tree_pss_mb``)."""
    time.sleep(settle)
    return {s.label: {"server": tree_rss_mb(s.server.pid), "worker": tree_rss_mb(s.worker.pid),  # type: ignore[union-attr]
                      "worker_alone": tree_rss_mb(s.worker.pid, children=False),  # type: ignore[union-attr]
                      "worker_pss": tree_pss_mb(s.worker.pid)}  # type: ignore[union-attr]
            for s in sides}


def import_times(commands: dict[str, tuple[list[str], dict[str, str]]], rounds: int) -> dict[str, float]:
    """Median wall time of each ``python -c 'from X import flow'``, alternating."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    labels = list(commands)
    for i in range(rounds):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            argv, env = commands[label]
            began = time.perf_counter()
            subprocess.run(argv, env=env, check=True, timeout=120, capture_output=True)
            times[label].append(time.perf_counter() - began)
    return {label: statistics.median(values) for label, values in times.items()}


def cold_starts(make: dict[str, Callable[[], Side]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Server process start -> health OK, on an empty database (migrations included) and again on the
    database it just made (a restart). Alternating sides, one server at a time."""
    out: dict[str, dict[str, list[float]]] = {label: {"empty": [], "restart": []} for label in make}
    labels = list(make)
    for i in range(rounds):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            side = make[label]()
            try:
                side.fresh_database()  # type: ignore[attr-defined]
                out[label]["empty"].append(side.start_server())
                side.stop_process(side.server)
                out[label]["restart"].append(side.start_server())
            finally:
                side.stop()
    return out


def cleanup_runs(side: Side, run_ids: list[str]) -> None:
    """Cancel the create-API test's waiting runs (our dispatcher would keep re-publishing them)."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(side.cancel, run_ids))
