"""One process per worker name, as users run workers: a worker cut off from the API while its name
was taken stops when it is heard again (exit 1, the conflict named), and a worker restarted under
its stable name after a crash gets it back -- at once after a kill (its dropped connection frees the
name within the 2 s grace), after waiting for it when its old life vanished without a word (a lost
host: a proxy that stops forwarding)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.harness import postgres_env, wait_until
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e
HEARTBEAT = 10.0  # the default: OFFLINE after 30 s of silence; a worker starts well within half of it


@pytest.fixture
def stack(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, {**postgres_env(postgres_url, redis_url), "ORCH_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT)})
    try:
        s.start_server()
        assert s.orch("work-pool", "create", "local").returncode == 0
        yield s
    finally:
        s.stop()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[TcpProxy]:
    p = TcpProxy("127.0.0.1", stack.port)
    yield p
    p.close()


def start_through(stack: Stack, proxy: TcpProxy, log: str) -> object:
    """``orch worker start --name twin`` reaching the API through ``proxy``, once ONLINE."""
    process = stack.spawn(log, [*stack.orch_argv, "worker", "start", "--pool", "local", "--name", "twin"],
                          cwd=stack.project, env={**stack.env, "ORCH_API_URL": f"http://127.0.0.1:{proxy.port}/api"})
    wait_until("twin ONLINE", lambda: "twin" in stack.online_workers("local"), 90, alive=stack.check_alive,
               describe=stack.all_logs)
    return process


def last_beat(stack: Stack, name: str) -> dt.datetime:
    return next(w.last_heartbeat for w in stack.client.list_workers("local") if w.name == name)


def silent_for(stack: Stack, name: str) -> float:
    return (dt.datetime.now(dt.UTC) - last_beat(stack, name)).total_seconds()


def serving(stack: Stack, name: str) -> None:
    """Wait until the worker is past its first heartbeat: its later ones (the heartbeat thread's, and
    the one that opens its cancellation long-poll, its connection lease) have arrived too."""
    seen = [last_beat(stack, name)]

    def beaten_twice() -> bool:
        beat = last_beat(stack, name)
        if beat != seen[-1]:
            seen.append(beat)
        return len(seen) >= 3

    wait_until("two more heartbeats", beaten_twice, 60)


def test_a_worker_cut_off_while_its_name_was_taken_stops_when_heard_again(stack: Stack, proxy: TcpProxy) -> None:
    cut_off = start_through(stack, proxy, "cut-off")
    proxy.pause()  # a network partition between the worker and the API
    wait_until("twin OFFLINE", lambda: "twin" not in stack.online_workers("local"), 60)
    stack.start_worker("local", "--name", "twin", name="holder")
    proxy.resume()
    assert cut_off.wait(timeout=90) == 1  # type: ignore[attr-defined]
    stack.forget(cut_off)  # type: ignore[arg-type]
    log = stack.log_tail("cut-off", 20000)
    assert "ERROR orchestrator.worker: worker name 'twin' in pool 'local' is held by another worker process now" in log
    errors = [line for line in log.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].endswith("; this worker stopped"), log[-3000:]
    stack.check_alive()  # the holder goes on
    assert stack.online_workers("local") == {"twin"}


def test_a_worker_restarted_after_its_host_was_lost_waits_for_its_name(stack: Stack, proxy: TcpProxy) -> None:
    lost = start_through(stack, proxy, "lost")
    serving(stack, "twin")
    proxy.pause()  # the host is lost: nothing more arrives from it, no connection closes
    stack.kill(lost)  # type: ignore[arg-type]
    # Restarted at once, the name is refused while the old life looks alive (one line, exit 1: a
    # restart policy tries again); once that life has been silent longer than it has left before
    # it is OFFLINE, a start waits for the name instead of failing.
    wait_until("the old life silent for over half the window", lambda: silent_for(stack, "twin") > 1.6 * HEARTBEAT,
               40, 0.1)
    assert "twin" in stack.online_workers("local")
    stack.start("restarted", "worker", "start", "--pool", "local", "--name", "twin")
    wait_until("the restarted worker serving", lambda: "serving pool" in stack.log_tail("restarted"), 60,
               alive=stack.check_alive, describe=stack.all_logs)
    log = stack.log_tail("restarted")
    assert "is held by a worker silent for" in log and "waiting up to" in log, log
    assert "Error: " not in log


def test_a_worker_killed_and_restarted_at_once_gets_its_name_back(stack: Stack) -> None:
    first = stack.start_worker("local", "--name", "twin", name="first")
    serving(stack, "twin")
    stack.kill(first)  # the API sees its connection drop: the name is free after the 2 s grace
    stack.start("again", "worker", "start", "--pool", "local", "--name", "twin")
    wait_until("the restarted worker serving", lambda: "serving pool" in stack.log_tail("again"), 60,
               alive=stack.check_alive, describe=stack.all_logs)
    assert "Error: " not in stack.log_tail("again")
    wait_until("twin ONLINE", lambda: "twin" in stack.online_workers("local"), 30)
