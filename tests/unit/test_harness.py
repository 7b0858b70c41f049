"""The harness's one bounded wait (tests/harness.py): what it returns and what its failures say."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.harness import wait_until


def test_it_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready"])
    assert wait_until("the value", lambda: next(values), 5, 0) == "ready"


def test_a_timeout_names_what_was_awaited_the_last_error_and_the_description() -> None:
    def check() -> bool:
        raise ConnectionRefusedError("nobody listens")

    began = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        wait_until("GET /api/health", check, 0.2, 0.01, ignore=(OSError,), describe=lambda: "server log tail")
    assert time.monotonic() - began < 5
    message = str(raised.value)
    assert message.startswith("timed out after 0.2 s waiting for GET /api/health"), message
    assert "ConnectionRefusedError: nobody listens" in message and message.endswith("\nserver log tail"), message


def test_an_error_it_was_not_told_to_ignore_propagates_at_once() -> None:
    calls = itertools.count()

    def check() -> bool:
        next(calls)
        raise KeyError("state")

    with pytest.raises(KeyError):
        wait_until("a run", check, 30, 0.01)
    assert next(calls) == 1


def test_a_dead_process_is_reported_as_itself_not_as_a_timeout() -> None:
    def alive() -> None:
        raise RuntimeError("server exited with 1")

    with pytest.raises(RuntimeError, match="server exited with 1"):
        wait_until("GET /api/health", lambda: False, 30, 0.01, alive=alive)
