"""``orch worker check``, the probe of the image's worker containers and the chart's worker pods:
exit 0 only when the API answers and, with --name, that worker is ONLINE; one line otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, free_port, live_server
from tests.deploy.conftest import wait_for

ORCH = [sys.executable, "-m", "orchestrator.cli.main"]
KEY = "probe-key-0123456789"
HEARTBEAT = 2.0  # OFFLINE after three silent heartbeats (6 s): longer than a CLI start under load


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    from orchestrator import schemas
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        api_url="http://unused/api", server_api_keys=KEY, worker_heartbeat_seconds=HEARTBEAT)
    with live_server(settings, broker=MemoryBroker()) as live:
        live.client(api_key=KEY).create_work_pool(schemas.WorkPoolCreate(name="probed", type="process"))
        yield live


def check(url: str, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_API_URL"] = url
    if key:
        env["ORCH_API_KEY"] = key
    return subprocess.run([*ORCH, "worker", "check", *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_check_passes_for_an_answering_api_and_an_existing_pool(server: LiveServer) -> None:
    result = check(server.url, "--pool", "probed")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_requires_the_named_worker_to_be_online(server: LiveServer) -> None:
    server.client(api_key=KEY).heartbeat("probed", "w1")
    assert check(server.url, "--pool", "probed", "--name", "w1").returncode == 0
    assert one_error_line(check(server.url, "--pool", "probed", "--name", "w2")) == \
        "Error: worker 'w2' is not registered in pool 'probed'"
    # silent for three heartbeats: OFFLINE, and the probe fails
    client = server.client(api_key=KEY)
    wait_for("w1 to go OFFLINE", lambda: client.list_workers("probed")[0].status == "OFFLINE", 30)
    line = one_error_line(check(server.url, "--pool", "probed", "--name", "w1"))
    assert line.startswith("Error: worker 'w1' in pool 'probed' is OFFLINE (last heartbeat ")


def test_check_fails_in_one_line_for_a_missing_pool_a_bad_key_or_no_server(server: LiveServer) -> None:
    assert "work pool 'nope' not found" in one_error_line(check(server.url, "--pool", "nope"))
    assert "Error: " in one_error_line(check(server.url, "--pool", "probed", key="wrong-key-0123456789"))
    assert "Error: " in one_error_line(check(server.url, "--pool", "probed", key=None))
    dead = f"http://127.0.0.1:{free_port()}/api"
    started = time.monotonic()
    assert "cannot reach the API" in one_error_line(check(dead, "--pool", "probed", "--timeout", "2"))
    assert time.monotonic() - started < 20  # a probe never retries for long
