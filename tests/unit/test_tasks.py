"""``@task`` and the flow runtime, in-process: calls inside and outside flows, futures, map,
retries, timeouts, hooks, log_prints, async flows and tasks, options. Task runs are recorded in a
deployment's run, and outside flows when ORCH_API_URL is set (tests/integration/
test_tasks_and_async.py covers both)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from orchestrator import Task, flow, task, unmapped
from orchestrator.sdk.timeouts import RunTimeout


@task
def add(x: int, y: int = 1) -> int:
    return x + y


@task
async def slow_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


def test_a_task_outside_a_flow_is_a_task_run_with_its_retries_and_states() -> None:
    """As in Prefect 3: retries, return_state, hooks and futures with their task run, no flow needed
    (recorded through the API only when ORCH_API_URL is set: tests/integration/test_tasks_and_async.py)."""
    calls: list[int] = []
    seen: list[tuple[str, str]] = []

    @task(retries=2, on_failure=[lambda t, run, state: seen.append((run.name, state.type))],
          on_completion=[lambda t, run, state: seen.append((run.name, state.type))])
    def flaky(times: int) -> int:
        calls.append(1)
        if len(calls) <= times:
            raise ValueError(f"failure {len(calls)}")
        return len(calls)

    assert flaky(2) == 3  # two retries, the third attempt succeeds
    calls.clear()
    with pytest.raises(ValueError, match="failure 3"):
        flaky(5)
    assert calls == [1, 1, 1]
    calls.clear()
    state = flaky(0, return_state=True)
    assert state.is_completed() and state.result() == 1
    assert [kind for _name, kind in seen] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert len({name for name, _kind in seen}) == 3 and all(name.startswith("flaky-") for name, _ in seen)

    future = add.submit(2)
    assert future.result(timeout=10) == 3
    assert future.task_run is not None and future.task_run.state_type == "COMPLETED"
    assert future.task_run.run_count == 1 and future.task_run_id == future.task_run.id
    mapped = add.map([1, 2, 3], unmapped(10))
    assert mapped.result(timeout=10) == [11, 12, 13]
    assert [f.task_run.state_name for f in mapped] == ["Completed"] * 3


def test_a_task_outside_a_flow_keeps_its_timeout_and_async_tasks_stay_coroutines() -> None:
    @task(timeout_seconds=0.1)
    def sleepy() -> None:
        threading.Event().wait(10)

    with pytest.raises(RunTimeout, match="task 'sleepy' exceeded its timeout of 0.1s"):
        sleepy()
    assert asyncio.run(slow_double(2)) == 4  # an async task outside a flow: a coroutine, as its function
    state = asyncio.run(slow_double(3, return_state=True))
    assert state.is_completed() and state.result() == 6
    future = slow_double.submit(4)
    assert future.result(timeout=10) == 8 and future.task_run.state_type == "COMPLETED"


def test_task_options_and_defaults() -> None:
    @task(name="named", version="3", tags=["b", "a", "b"], retries=2, timeout_seconds=5, log_prints=True,
          persist_result=True, cache_key_fn=lambda *_: "k", result_storage="s3/x", refresh_cache=False)
    def documented() -> None:
        """Docs."""

    assert isinstance(documented, Task)
    assert (documented.name, documented.version, documented.tags, documented.retries) == ("named", "3", ["a", "b"], 2)
    assert documented.description == "Docs."
    assert add.name == "add" and add.run_version == add.run_version and len(add.run_version) == 12
    assert documented.run_version == "3"
    assert documented.with_options(name="other").name == "other"
    assert documented.with_options(name="other").version == "3"
    with pytest.raises(TypeError, match="unknown option.*retires"):
        task(retires=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="decorates a function"):
        Task("not a function")  # type: ignore[arg-type]


def test_calls_submits_and_maps_inside_a_flow() -> None:
    @flow
    def pipeline() -> dict[str, Any]:
        direct = add(1, 2)
        future = add.submit(direct, y=10)
        chained = add.submit(future)  # a future as an argument: its result is passed
        mapped = add.map([1, 2, 3], y=unmapped(100))
        grid = add.map([1, 2], [10, 20])
        waited = add.submit(0, wait_for=[chained])
        return {"direct": direct, "future": future.result(), "chained": chained.result(),
                "mapped": mapped.result(), "grid": grid.result(), "waited": waited.result(),
                "in_a_list": add.submit(*[0], y=add.submit(5)).result()}

    assert pipeline() == {"direct": 3, "future": 13, "chained": 14, "mapped": [101, 102, 103], "grid": [11, 22],
                          "waited": 1, "in_a_list": 6}


def test_map_refuses_iterables_of_different_lengths() -> None:
    @flow
    def bad() -> None:
        add.map([1, 2], [1, 2, 3])

    with pytest.raises(ValueError, match="different lengths"):
        bad()


def test_a_flow_waits_for_the_tasks_it_submitted() -> None:
    finished = threading.Event()

    @task
    def late() -> None:
        time.sleep(0.2)
        finished.set()

    @flow
    def fire_and_forget() -> None:
        late.submit()

    fire_and_forget()
    assert finished.is_set()


def test_task_retries_with_delays_a_condition_and_return_state() -> None:
    attempts: list[float] = []

    @task(retries=3, retry_delay_seconds=[0.05, 0.1])
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError(f"attempt {len(attempts)}")
        return "ok"

    @task(retries=5, retry_condition_fn=lambda task, run, state: "retry me" in (state.message or ""))
    def picky(message: str) -> None:
        attempts.append(0.0)
        raise RuntimeError(message)

    @flow
    def pipeline() -> Any:
        return flaky(), picky("final", return_state=True)

    value, state = pipeline()
    assert value == "ok"
    assert attempts[1] - attempts[0] >= 0.05 and attempts[2] - attempts[1] >= 0.1
    assert state.is_failed() and "final" in (state.message or "")
    assert len(attempts) == 4  # picky was not retried: its condition said no
    with pytest.raises(RuntimeError, match="final"):
        state.result()


def test_failures_reach_the_future_and_raise_on_failure_false_returns_them() -> None:
    @task
    def boom() -> None:
        raise KeyError("gone")

    @flow
    def pipeline() -> Any:
        future = boom.submit()
        future.wait()
        return future.result(raise_on_failure=False), future.state

    error, state = pipeline()
    assert isinstance(error, KeyError) and state.is_failed()


def test_a_task_timeout_interrupts_sync_code_on_the_main_thread() -> None:
    @task(timeout_seconds=0.2, retries=1)
    def sleeps() -> None:
        time.sleep(30)

    @flow
    def pipeline() -> None:
        sleeps()

    started = time.monotonic()
    with pytest.raises(RunTimeout, match="task 'sleeps' exceeded its timeout of 0.2s"):
        pipeline()
    assert time.monotonic() - started < 5  # two attempts of 0.2 s, not 30 s


def test_a_flow_timeout_is_not_retried_by_the_task_it_interrupts() -> None:
    attempts: list[int] = []

    @task(retries=5)
    def sleeps() -> None:
        attempts.append(1)
        time.sleep(30)

    @flow(timeout_seconds=0.3)
    def pipeline() -> None:
        sleeps()

    with pytest.raises(RunTimeout, match="flow 'pipeline' exceeded"):
        pipeline()
    assert attempts == [1]


def test_flow_options_retries_and_hooks() -> None:
    seen: list[tuple[str, str, str]] = []
    attempts: list[int] = []

    def record(flow: Any, run: Any, state: Any) -> None:
        seen.append((flow.name, run.name, state.type))

    def broken_hook(flow: Any, run: Any, state: Any) -> None:
        raise RuntimeError("a hook's failure changes nothing")

    @flow(name="hooked", retries=1, retry_delay_seconds=0.01, on_running=[record], on_completion=[broken_hook, record],
          on_failure=[record], persist_result=False, task_runner=None, result_storage=None)
    def hooked(fail: bool) -> str:
        attempts.append(1)
        if fail:
            raise ValueError("no")
        return "done"

    assert hooked(False) == "done"
    with pytest.raises(ValueError):
        hooked(True)
    assert seen == [("hooked", "hooked", "RUNNING"), ("hooked", "hooked", "COMPLETED"),
                    ("hooked", "hooked", "RUNNING"), ("hooked", "hooked", "RUNNING"), ("hooked", "hooked", "FAILED")]
    assert len(attempts) == 3
    with pytest.raises(TypeError, match="unknown option"):
        flow(retry=1)  # type: ignore[call-overload]
    assert hooked.with_options(name="again").name == "again"


def test_return_state_gives_the_final_state_of_a_flow_call() -> None:
    @flow
    def fails() -> None:
        raise ValueError("no")

    @flow
    async def works() -> int:
        return 1

    state = fails(return_state=True)
    assert state.is_failed() and state.message == "ValueError: no"
    assert isinstance(state.result(raise_on_failure=False), ValueError)
    assert asyncio.run(works(return_state=True)).result() == 1


def test_flow_run_name_and_versions() -> None:
    @flow(flow_run_name="load-{day}")
    def load(day: str) -> None: ...

    @flow(version="7", flow_run_name=lambda: "fixed")
    def other() -> None: ...

    assert load.run_name({"day": "mon"}) == "load-mon"
    assert other.run_name({}) == "fixed"
    assert other.run_version() == "7"
    assert load.run_version() == load.source_hash()


def test_log_prints_sends_prints_to_the_run_logger(caplog: pytest.LogCaptureFixture,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def inherits() -> None:
        print("from the task")

    @task(log_prints=False)
    def opts_out() -> None:
        print("to stdout")

    @flow(log_prints=True)
    def chatty() -> None:
        print("from the flow", 1, sep="-")
        inherits()
        inherits.submit().result()
        opts_out()

    with caplog.at_level(logging.INFO):
        chatty()
        print("after the flow")
    logged = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("orchestrator.")]
    assert logged == [("orchestrator.flow_run", "from the flow-1"), ("orchestrator.task_run", "from the task"),
                      ("orchestrator.task_run", "from the task")]
    assert capsys.readouterr().out == "to stdout\nafter the flow\n"


def test_an_async_flow_returns_a_coroutine_and_mixes_sync_and_async_tasks() -> None:
    @flow(retries=1)
    async def mixed(n: int) -> dict[str, Any]:
        gathered = await asyncio.gather(*(slow_double(i) for i in range(n)))
        submitted = slow_double.submit(10)
        return {"gathered": list(gathered), "sync": add(1), "submitted": submitted.result(),
                "mapped": slow_double.map(range(n)).result()}

    @flow
    def sync_calls_async() -> int:
        return slow_double(21)  # runs to its end

    coroutine = mixed(3)
    assert asyncio.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == {"gathered": [0, 2, 4], "sync": 2, "submitted": 20, "mapped": [0, 2, 4]}
    assert sync_calls_async() == 42


def test_async_timeouts_cancel_the_coroutine() -> None:
    cancelled: list[str] = []

    @task(timeout_seconds=0.1)
    async def waits() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("task")
            raise

    @flow(timeout_seconds=0.2)
    async def waits_too() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("flow")
            raise

    @flow
    async def calls() -> None:
        await waits()

    with pytest.raises(RunTimeout, match="task 'waits' exceeded its timeout of 0.1s"):
        asyncio.run(calls())
    with pytest.raises(RunTimeout, match="flow 'waits-too' exceeded its timeout of 0.2s"):
        asyncio.run(waits_too())
    assert cancelled == ["task", "flow"]


def test_a_timeout_in_a_submitted_sync_task_reaches_it_in_its_thread() -> None:
    @task(timeout_seconds=0.1)
    def busy() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # Python instructions: the exception is delivered at once
            pass

    @flow
    def pipeline() -> Any:
        return busy.submit().result(raise_on_failure=False)

    started = time.monotonic()
    assert isinstance(pipeline(), RunTimeout)
    assert time.monotonic() - started < 10


LAZY = r"""
import json, sys
import orchestrator
first = sorted(m for m in ("asyncio", "orchestrator.sdk.tasks", "orchestrator.sdk.running") if m in sys.modules)
from orchestrator import flow, task

@task
def one() -> int:
    return 1

@flow
def sync_flow() -> int:
    return one() + one.submit().result()

assert sync_flow() == 2
print(json.dumps({"at_import": first, "after_a_sync_flow": "asyncio" in sys.modules}))
"""


def test_import_orchestrator_stays_light_and_sync_flows_never_load_asyncio() -> None:
    """Every flow-run process imports these: tasks load on first use, asyncio (15 ms) only for async code."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", LAZY], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"at_import": [], "after_a_sync_flow": False}
