"""Shared fixtures for the unit tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def isolated_imports() -> Iterator[None]:
    """Undo what importing throw-away modules does: new ``sys.modules`` entries and ``sys.path``
    additions are removed after the test, so tests cannot see each other's modules."""
    modules_before = set(sys.modules)
    path_before = list(sys.path)
    yield
    for name in set(sys.modules) - modules_before:
        del sys.modules[name]
    sys.path[:] = path_before
