"""The flow-run state machine: one table of allowed transitions.

``orchestrator.server.services.transitions.transition`` is the only writer of a run's state; it turns this
table into a guarded ``UPDATE ... WHERE state_type IN (allowed sources)``, so two writers racing
for a run are settled by the database, not by Python locks.
"""

from __future__ import annotations

from enum import StrEnum


class StateType(StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"


S = StateType
FINAL_STATES: frozenset[StateType] = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.CRASHED})

# from -> the states it may move to. Final states go nowhere.
TRANSITIONS: dict[StateType, frozenset[StateType]] = {
    # SCHEDULED -> SCHEDULED renames (Late, AwaitingConcurrencySlot) or reschedules.
    # SCHEDULED -> RUNNING / CANCELLING: a run held by its flow-run process between in-process
    # retries (AwaitingRetry); services/transitions.py only allows it for the holder.
    S.SCHEDULED: frozenset({S.SCHEDULED, S.PENDING, S.RUNNING, S.CANCELLING, S.CANCELLED}),
    # PENDING -> SCHEDULED: a claim given back (worker gone before the infrastructure started).
    # PENDING -> FAILED: the flow process could not load the entrypoint or its parameters.
    S.PENDING: frozenset({S.SCHEDULED, S.RUNNING, S.CANCELLING, S.CANCELLED, S.FAILED, S.CRASHED}),
    # RUNNING -> SCHEDULED: AwaitingRetry.
    S.RUNNING: frozenset({S.SCHEDULED, S.PAUSED, S.CANCELLING, S.CANCELLED, S.COMPLETED, S.FAILED, S.CRASHED}),
    S.PAUSED: frozenset({S.RUNNING, S.CANCELLING, S.CANCELLED, S.CRASHED}),
    # A run may finish on its own before the cancellation reaches it: its true end wins.
    S.CANCELLING: frozenset({S.CANCELLED, S.COMPLETED, S.FAILED, S.CRASHED}),
    S.CANCELLED: frozenset(),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CRASHED: frozenset(),
}

# Guards a pair carries whoever asks for it, by name (``services/transitions.py`` turns each name
# into a condition of the guarded update; callers add their own named guards, such as ``holder``).
#   unheld: no worker or flow-run process holds the run (worker_name is empty): a claim.
#   held:   its flow-run process holds it between in-process retries (worker_name is set).
UNHELD, HELD = "unheld", "held"
GUARDS: dict[tuple[StateType, StateType], frozenset[str]] = {
    (S.SCHEDULED, S.PENDING): frozenset({UNHELD}),
    (S.SCHEDULED, S.RUNNING): frozenset({HELD}),
    (S.SCHEDULED, S.CANCELLING): frozenset({HELD}),
}

DEFAULT_NAMES: dict[StateType, str] = {
    S.SCHEDULED: "Scheduled",
    S.PENDING: "Pending",
    S.RUNNING: "Running",
    S.PAUSED: "Paused",
    S.CANCELLING: "Cancelling",
    S.CANCELLED: "Cancelled",
    S.COMPLETED: "Completed",
    S.FAILED: "Failed",
    S.CRASHED: "Crashed",
}


def allowed_sources(target: StateType) -> frozenset[StateType]:
    """Every state from which ``target`` may be entered."""
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


def is_allowed(source: StateType, target: StateType) -> bool:
    return target in TRANSITIONS[source]


def guards_of(source: StateType, target: StateType) -> frozenset[str]:
    """The named guards the pair carries besides being in the table (none for most)."""
    return GUARDS.get((source, target), frozenset())
