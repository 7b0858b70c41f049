"""A setting no program could use stops the program at once with one line naming it, as a value that
does not parse does (docs/settings.md), rather than a traceback or a server that misbehaves later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("variable, value", [
    ("ORCH_CLIENT_TIMEOUT_SECONDS", "-1"),  # was a ValueError traceback from the socket
    ("ORCH_CLIENT_TIMEOUT_SECONDS", "0"),
    ("ORCH_WORKER_HEARTBEAT_SECONDS", "0"),
    ("ORCH_REAPER_INTERVAL_SECONDS", "-5"),
    ("ORCH_DISPATCHER_REDISPATCH_SECONDS", "0"),
    ("ORCH_WORKER_CANCEL_GRACE_SECONDS", "-1"),
    ("ORCH_CANCELLING_TIMEOUT_SECONDS", "-1"),
])
def test_a_setting_out_of_range_is_one_line_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "ORCH_API_URL": "http://127.0.0.1:9/api", variable: value}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "work-pool", "ls"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: invalid setting: {variable}: "), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_zero_is_a_grace_and_a_cancelling_timeout() -> None:
    from orchestrator.settings import Settings

    settings = Settings(worker_cancel_grace_seconds=0, cancelling_timeout_seconds=0)
    assert (settings.worker_cancel_grace_seconds, settings.cancelling_timeout_seconds) == (0, 0)
