"""The handle a worker kind keeps on one run's infrastructure, and how that infrastructure ended.

Its own module so that the base worker and the recovery policy (``workers/recovery.py``) share it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InfrastructureResult:
    """How the infrastructure of one run ended."""

    exit_code: int
    detail: str = ""
    # Set when the infrastructure itself says why it died (OOM, eviction...): the run is CRASHED
    # with this reason even if the exit code alone would not tell.
    crash_reason: str | None = None
    # The flow-run process left nothing to settle (a forked engine that ended normally with exit
    # code 0, ``workers/forkserver.py``): the worker does not read the run back.
    settled: bool = False


class Infrastructure(Protocol):
    """What ``start`` returns: the kind's own handle on one run's infrastructure."""

    @property
    def infrastructure_id(self) -> str:
        """A stable id naming the infrastructure (``process:host:pid``, a container id, a Job name)."""
