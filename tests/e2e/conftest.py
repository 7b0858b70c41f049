"""End-to-end: the CLI and SDK as subprocesses, exactly as the README tells a user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

ORCH = [sys.executable, "-m", "orchestrator.cli.main"]


class Stack:
    """Processes of one orchestrator installation, with the environment a user would set."""

    def __init__(self, tmp_path: Path, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.project = tmp_path / "project"
        self.project.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        self.env.update(ORCH_HOME=str(tmp_path / "home"), ORCH_API_URL=self.api_url, PYTHONUNBUFFERED="1",
                        **extra_env)
        self.logs = tmp_path
        self.processes: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen([*ORCH, *args], cwd=self.project, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.processes.append((process, log))
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9 one of our processes (a fault on purpose) and stop watching it."""
        process.kill()
        process.wait(timeout=10)
        self.forget(process)

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        """Stop watching a process that has exited."""
        for entry in list(self.processes):
            if entry[0] is process:
                self.processes.remove(entry)
                entry[1].close()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            for process, _ in self.processes:
                if process.poll() is not None:
                    pytest.fail(f"a process exited early ({process.args}); logs:\n{self.all_logs()}")
            time.sleep(0.05)
        pytest.fail(f"API not healthy after {timeout}s; logs:\n{self.all_logs()}")

    def orch(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ORCH, *args], cwd=self.project, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def python(self, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], cwd=self.project, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.api_url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def all_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.logs.glob("*.log"))

    def stop(self) -> None:
        for process, _ in reversed(self.processes):
            process.terminate()
        for process, log in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            log.close()


@pytest.fixture(params=["embedded", "postgres+redis"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """One installation on (a) the embedded defaults and (b) PostgreSQL + Redis."""
    env: dict[str, str] = {}
    if request.param == "postgres+redis":
        env["ORCH_DATABASE_URL"] = str(request.getfixturevalue("postgres_url"))
        env["ORCH_BROKER_URL"] = str(request.getfixturevalue("redis_url"))
    s = Stack(tmp_path, env)
    yield s
    s.stop()
