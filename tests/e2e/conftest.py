"""End-to-end: the CLI and SDK as subprocesses, exactly as the README tells a user. The processes
are started by ``tests.harness.Stack``; this file only makes one per test and configuration."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests import harness

ORCH = list(harness.ORCH_MODULE)


class Stack(harness.Stack):
    """A ``harness.Stack`` whose processes write their output unbuffered: tests read the logs while
    the processes still run."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        super().__init__(root, {"PYTHONUNBUFFERED": "1", **env})


@pytest.fixture(params=["embedded", "postgres+redis"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """One installation on (a) the embedded defaults and (b) PostgreSQL + Redis."""
    env: dict[str, str] = {}
    if request.param == "postgres+redis":
        env = harness.postgres_env(str(request.getfixturevalue("postgres_url")),
                                   str(request.getfixturevalue("redis_url")))
    s = Stack(tmp_path, env)
    yield s
    s.stop()
