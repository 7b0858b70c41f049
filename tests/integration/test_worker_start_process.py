"""What ``orch worker start`` holds once its Celery worker is ready, as a user starts it: typed with
well-formed options it is served without typer and the CLI's other commands (``cli/main.py``,
``cli/worker_start.py``), which the worker process would otherwise keep for its whole life."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Stack, postgres_env

# ``orch worker start`` in this interpreter (its real entry point), reporting its modules when Celery
# says the worker is ready to consume, then leaving at once.
DRIVER = r"""
import json, os, sys
from celery.signals import worker_ready

@worker_ready.connect
def report(**_):
    print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)

sys.argv = ["orch", "worker", "start", "--pool", "local", "--type", "process", "--limit", "2"]
from orchestrator.cli.main import main
main()
"""


def test_worker_start_loads_neither_typer_nor_the_other_commands(postgres_url: str, redis_url: str,
                                                                 tmp_path: Path) -> None:
    stack = Stack(tmp_path, postgres_env(postgres_url, redis_url))
    try:
        stack.start_server()
        done = stack.python(DRIVER, timeout=90)
    finally:
        stack.stop()
    lines = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    loaded = set(json.loads(lines[0].removeprefix("MODULES ")))
    assert {"celery.worker", "workers.process"} <= loaded  # a real worker
    assert {"typer", "rich", "shellingham"} & {name.split(".")[0] for name in loaded} == set()
    assert {"orchestrator.cli.commands", "orchestrator.cli.worker", "orchestrator.cli.server",
            "orchestrator.cli.deploy", "orchestrator.cli.help_format"} & loaded == set()
