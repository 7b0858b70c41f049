"""The restart-recovery policy every worker kind shares, written once.

A worker that stops without cleaning up (killed, OOM, node lost) leaves infrastructure behind: a
container or a Job still running, or one that exited while nobody watched. A restarted worker of
the same pool and name finds these *leftovers* (each kind yields its own from the labels it put on
them: ``BaseWorker.leftovers``) and ``decide`` says, from the run's state in the API, which of three
things to do with each:

- ``CLEAN_UP``: the run is final, or no longer held by this worker (the reaper gave it back,
  another worker took it): stop the infrastructure if it still runs -- nothing will read it again;
- ``ADOPT``: the run is live and its infrastructure still runs: watch it again, as if this worker
  had started it;
- ``SETTLE``: otherwise (it exited unwatched, or the run is CANCELLING and the cancel was never
  carried out): stop it if it runs, then end the run the way the old worker would have.

``BaseWorker.recover`` walks the leftovers and carries the decision out with the kind's own
``kill`` / ``clean_up`` / ``adopt`` / ``wait``.
"""

from __future__ import annotations

import enum
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.states import FINAL_STATES, StateType

if TYPE_CHECKING:
    from workers.infrastructure import Infrastructure


@dataclass(frozen=True)
class Leftover:
    """Infrastructure a previous life of this worker started, as the kind found it again."""

    run_id: uuid.UUID
    infrastructure: Infrastructure
    running: bool  # still running (a live container, an active Job), not exited


@dataclass
class Recovery:
    """What ``recover`` did with the leftovers it found, by run."""

    adopted: list[uuid.UUID] = field(default_factory=list)  # still running: watched again
    finished: list[uuid.UUID] = field(default_factory=list)  # exited unwatched, or a cancel carried out
    cleaned: list[uuid.UUID] = field(default_factory=list)  # of runs already final or handed on
    threads: list[threading.Thread] = field(default_factory=list)  # watching the adopted ones


class Action(enum.Enum):
    CLEAN_UP = "clean up"
    ADOPT = "adopt"
    SETTLE = "settle"


def decide(state: StateType, holder: str | None, worker_name: str, running: bool) -> Action:
    """What to do with one leftover: ``state`` and ``holder`` are the run's in the API now,
    ``running`` whether its infrastructure still runs."""
    if state in FINAL_STATES or holder != worker_name:
        return Action.CLEAN_UP
    if running and state != StateType.CANCELLING:
        return Action.ADOPT
    return Action.SETTLE
