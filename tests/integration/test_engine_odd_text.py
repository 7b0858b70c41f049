"""A flow whose output, error or result holds text the database cannot store (a NUL character, an
unpaired surrogate) loses nothing else: the API refuses such text with a 422, so the flow-run
process escapes it in the log lines and state messages it reports, and leaves such a result
unstored with a note. On SQLite and PostgreSQL, with a real worker and engine process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worker_runs import log_text, process_pool_run
from workers.process import ProcessWorker

pytestmark = pytest.mark.integration

FLOWS_PY = '''\
import logging

from orchestrator import flow

ODD_BYTE = b"\\xff".decode("utf-8", "surrogateescape")  # how Python decodes a file name that is not UTF-8


@flow
def odd_output() -> str:
    print("nul:\\x00:end")
    print(f"surrogate:{ODD_BYTE}:end")
    logging.getLogger("odd").warning("logged \\x00 too")
    print("an ordinary line")
    return "result with a \\x00"


@flow
def odd_failure() -> None:
    raise ValueError(f"bad \\x00 value {ODD_BYTE}")
'''


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Any]:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def run_flow(api: Any, tmp_path: Path, function: str) -> tuple[Any, str]:
    client = api.client()
    pool, _, run = process_pool_run(client, tmp_path, FLOWS_PY, function)
    worker = ProcessWorker(client, pool=pool, name="odd-text", api_url=api.url, prewarm=False)
    try:
        worker.handle(run.id)  # returns once the process has exited and the run is settled
    finally:
        worker.stop()
    return client.read_flow_run(run.id), log_text(client, run.id)


def test_odd_output_and_result_lose_no_log_line_and_complete(api: Any, tmp_path: Path) -> None:
    done, logs = run_flow(api, tmp_path, "odd_output")
    assert done.state.type == "COMPLETED", done.state
    assert done.result is None
    assert "result not stored: text cannot contain NUL" in (done.state.message or "")
    lines = logs.splitlines()
    for line in ("nul:\\x00:end", "surrogate:\\udcff:end", "logged \\x00 too", "an ordinary line"):
        assert line in lines, (line, lines)


def test_an_error_message_with_odd_text_still_ends_the_run_failed(api: Any, tmp_path: Path) -> None:
    done, logs = run_flow(api, tmp_path, "odd_failure")
    assert done.state.type == "FAILED", done.state
    assert done.state.message == "ValueError: bad \\x00 value \\udcff"
    assert "ValueError: bad \\x00 value \\udcff" in logs  # the traceback, shipped as a log line
