"""The flow-run process takes the run and its deployment from its worker's claim
(``ORCH_FLOW_RUN_CLAIM``, ``orchestrator/handoff.py``) and fetches neither; started by hand with
only ``ORCH_FLOW_RUN_ID``, or handed a claim too large to pass, it fetches both. Counted at a real
API server from its own access log, with a real engine process, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.handoff import CLAIM_MAX_BYTES, CLAIM_VARIABLE
from tests.worker_runs import log_text, process_pool_run
from workers.process import ProcessWorker

pytestmark = pytest.mark.integration

FLOWS_PY = '''\
import os

from orchestrator import flow


@flow
def echo(text: str = "hi") -> dict:
    print("handed over:", "ORCH_FLOW_RUN_CLAIM" in os.environ)  # read once, not left for the flow
    return {"length": len(text)}
'''


class Requests(logging.Handler):
    """Every request the API server answers, as (method, path), from uvicorn's access log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []
        self._lock_seen = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            with self._lock_seen:
                self.seen.append((str(args[1]), str(args[2]).split("?")[0]))

    def gets(self, pattern: str) -> list[str]:
        with self._lock_seen:
            return [path for method, path in self.seen if method == "GET" and re.fullmatch(pattern, path)]


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Any]:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


@pytest.fixture
def requests() -> Iterator[Requests]:
    access = logging.getLogger("uvicorn.access")
    handler, level = Requests(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        access.removeHandler(handler)
        access.setLevel(level)


def start_claimed_run(api: Any, tmp_path: Path, *, hand_over: bool, text: str = "hi") -> tuple[Any, Any, dict[str, str]]:
    """Claim a run as a worker does and build its process's environment: with the claim's
    hand-off (as every worker kind passes it) or as a person starting the engine by hand."""
    client = api.client()
    pool, _, run = process_pool_run(client, tmp_path, FLOWS_PY, "echo", parameters={"text": text})
    worker = ProcessWorker(client, pool=pool, name="handing-over", api_url=api.url, prewarm=False)
    claim = client.claim_flow_run(run.id, worker.name, pool)
    env = worker.run_environment(run.id, claim if hand_over else None)
    return client, claim, env


def run_engine(tmp_path: Path, env: dict[str, str]) -> None:
    process = subprocess.run([sys.executable, "-m", "orchestrator.engine"], cwd=tmp_path / "flows",
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stdout + process.stderr


def fetches(requests: Requests, claim: Any) -> tuple[int, int]:
    """GETs of the run itself and of its deployment (not of its logs, states or anything else)."""
    return (len(requests.gets(rf".*/flow_runs/{claim.flow_run.id}")),
            len(requests.gets(rf".*/deployments/{claim.deployment.id}")))


def test_a_process_handed_the_claim_fetches_neither_run_nor_deployment(api: Any, tmp_path: Path,
                                                                       requests: Requests) -> None:
    client, claim, env = start_claimed_run(api, tmp_path, hand_over=True)
    assert CLAIM_VARIABLE in env
    run_engine(tmp_path, env)
    assert fetches(requests, claim) == (0, 0), requests.seen
    done = client.read_flow_run(claim.flow_run.id)
    assert (done.state.type, done.result) == ("COMPLETED", {"length": 2})
    assert "handed over: False" in log_text(client, claim.flow_run.id).splitlines()


def test_a_process_started_by_hand_fetches_both(api: Any, tmp_path: Path, requests: Requests) -> None:
    client, claim, env = start_claimed_run(api, tmp_path, hand_over=False)
    assert CLAIM_VARIABLE not in env
    run_engine(tmp_path, env)
    assert fetches(requests, claim) == (1, 1), requests.seen
    assert client.read_flow_run(claim.flow_run.id).state.type == "COMPLETED"


def test_a_claim_too_large_to_hand_over_is_fetched(api: Any, tmp_path: Path, requests: Requests) -> None:
    client, claim, env = start_claimed_run(api, tmp_path, hand_over=True, text="x" * CLAIM_MAX_BYTES)
    assert CLAIM_VARIABLE not in env
    run_engine(tmp_path, env)
    assert fetches(requests, claim) == (1, 1), requests.seen
    done = client.read_flow_run(claim.flow_run.id)
    assert (done.state.type, done.result) == ("COMPLETED", {"length": CLAIM_MAX_BYTES})


def test_a_hand_off_for_another_run_is_ignored(api: Any, tmp_path: Path, requests: Requests) -> None:
    """Fetching is always correct: a stale or damaged hand-off must never run the wrong flow."""
    client, claim, env = start_claimed_run(api, tmp_path, hand_over=True)
    other = claim.flow_run.model_copy(update={"id": uuid.uuid4(), "parameters": {"text": "wrong run"}})
    from orchestrator.handoff import Handoff

    env[CLAIM_VARIABLE] = Handoff(flow_run=other, deployment=claim.deployment).model_dump_json()
    run_engine(tmp_path, env)
    assert fetches(requests, claim) == (1, 1), requests.seen
    assert client.read_flow_run(claim.flow_run.id).result == {"length": 2}
