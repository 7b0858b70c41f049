"""``get_run_logger`` as a Prefect user expects it: a flow called directly is a run whose INFO
records reach the console; outside any run it refuses with ``MissingContextError``.

Each case runs a small program in a process of its own: pytest's logging plugin puts handlers on
the root logger, which would hide whether a plain program shows anything at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from orchestrator import flow, get_run_logger
from orchestrator.errors import MissingContextError

PROGRAM = textwrap.dedent('''
    import asyncio
    from orchestrator import flow, get_run_logger, task

    @task
    def step() -> None:
        get_run_logger().info("in the task")

    def done(flow, flow_run, state) -> None:
        get_run_logger().info("hook: %s", state.name)

    @flow(log_prints=True, on_completion=[done])
    def hello(x: int = 1) -> int:
        get_run_logger().info("hello %d", x)
        print("printed")
        step()
        return x

    @flow
    async def later() -> None:
        get_run_logger().info("async too")

    hello()
    asyncio.run(later())
''')


def run(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)


def test_a_flow_called_directly_shows_its_run_logs_on_the_console() -> None:
    done = run(PROGRAM)

    assert done.returncode == 0, done.stderr
    lines = [line.split(": ", 1)[1] for line in done.stderr.splitlines()]
    assert lines == ["hello 1", "printed", "in the task", "hook: Completed", "async too"]


def test_a_program_that_configured_logging_gets_each_record_once_through_its_handlers() -> None:
    configured = "import logging\nlogging.basicConfig(format='mine %(message)s')\n" + PROGRAM
    done = run(configured)

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["mine hello 1", "mine printed", "mine in the task", "mine hook: Completed",
                                        "mine async too"]


def test_get_run_logger_outside_any_run_is_a_missing_context_error() -> None:
    with pytest.raises(MissingContextError, match=r"get_run_logger\(\) was called outside a flow or task run"):
        get_run_logger()


def test_the_console_handler_is_gone_after_the_call() -> None:
    import logging

    @flow
    def quiet() -> None:
        get_run_logger().info("x")

    before = (logging.getLogger("orchestrator.flow_run").handlers[:], logging.getLogger("orchestrator.flow_run").level)
    quiet()
    assert (logging.getLogger("orchestrator.flow_run").handlers, logging.getLogger("orchestrator.flow_run").level) \
        == before
