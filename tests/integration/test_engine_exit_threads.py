"""A flow-run process that ends normally exits the interpreter's own way (orchestrator/runtime/engine.py
``end_process``, issue 15): it waits for the non-daemon threads the flow left running, like any
Python program, and a SIGTERM during that wait ends it at once, quietly, with the run's own exit
code and the atexit handlers run. A real API, a real ``python -m orchestrator.engine``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from tests.worker_runs import deploy, new_run, wait_state
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration

FLOWS_PY = '''\
import atexit
import threading
from pathlib import Path

from orchestrator import flow


@flow
def lingers(atexit_file: str) -> str:
    atexit.register(lambda: Path(atexit_file).write_text("atexit ran"))
    threading.Thread(target=threading.Event().wait, name="forever", daemon=False).start()
    return "ok"
'''


def test_a_sigterm_ends_the_wait_for_the_flows_threads_quietly(worker_api: Any, tmp_path: Path) -> None:
    client = worker_api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="lingering", type="process"))
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    atexit_file = tmp_path / "atexit"
    run = new_run(client, deploy(client, "lingering", flows, "lingers", {}),
                  parameters={"atexit_file": str(atexit_file)})
    worker = ProcessWorker(client, pool="lingering", name="w-lingers", api_url=worker_api.url, prewarm=False)
    client.claim_flow_run(run.id, worker.name, "lingering")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.engine"], cwd=flows, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={**os.environ, **worker.run_environment(run.id)})
    try:
        assert wait_state(client, run.id, "COMPLETED").result == "ok"
        # Reported, and still waiting for the flow's thread, as a Python program ends.
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1)
        assert not atexit_file.exists()  # the handlers run after the threads, as in any program

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    assert process.returncode == 0, output  # the run's outcome, not 143: it had ended well
    assert atexit_file.read_text() == "atexit ran"
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "Exception ignored" not in text, text
