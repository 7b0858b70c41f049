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
    # retries (AwaitingRetry); the pairs' guard ``held`` below.
    # SCHEDULED -> CRASHED: such a held run whose process died, when no worker can start it again
    # (a flow called directly: no deployment); held too.
    S.SCHEDULED: frozenset({S.SCHEDULED, S.PENDING, S.RUNNING, S.CANCELLING, S.CANCELLED, S.CRASHED}),
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

# Two SCHEDULED names say who starts the run next, and the rules below read them (never "SCHEDULED
# with a worker_name"): AwaitingRetry is held -- its flow-run process keeps the run (and its worker,
# its slot) between in-process retries, and reports RUNNING itself, as in Prefect; AwaitingRestart
# is free -- a crash restart, or a retry whose process died, that any worker starts afresh.
AWAITING_RETRY = "AwaitingRetry"
AWAITING_RESTART = "AwaitingRestart"

# Guards a pair carries whoever asks for it, by name (``services/transitions.py`` turns each name
# into a condition of the guarded update; callers add their own named guards, such as ``holder``).
#   unheld: the run is not AwaitingRetry: no flow-run process holds it, any worker may claim it.
#   held:   the run is AwaitingRetry: its flow-run process holds it between in-process retries.
UNHELD, HELD = "unheld", "held"
GUARDS: dict[tuple[StateType, StateType], frozenset[str]] = {
    (S.SCHEDULED, S.PENDING): frozenset({UNHELD}),
    (S.SCHEDULED, S.RUNNING): frozenset({HELD}),
    (S.SCHEDULED, S.CANCELLING): frozenset({HELD}),
    (S.SCHEDULED, S.CRASHED): frozenset({HELD}),
    (S.SCHEDULED, S.CANCELLED): frozenset({UNHELD}),  # a held run's process must be stopped: CANCELLING
}
# Entering the held state: from RUNNING (its process's report), or from itself (that report
# repeated), never from a run waiting for any worker.
INTO_HELD_GUARDS: dict[StateType, frozenset[str]] = {S.SCHEDULED: frozenset({HELD})}

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


def guards_of(source: StateType, target: StateType, name: str | None = None) -> frozenset[str]:
    """The named guards the pair carries besides being in the table (none for most); ``name`` is
    the target's state name (entering ``AwaitingRetry`` has guards of its own)."""
    guards = GUARDS.get((source, target), frozenset())
    if target == S.SCHEDULED and name == AWAITING_RETRY:
        guards |= INTO_HELD_GUARDS.get(source, frozenset())
    return guards


def is_held(state_type: StateType | str, state_name: str) -> bool:
    """Whether a run in this state is held by its flow-run process between in-process retries."""
    return state_type == S.SCHEDULED and state_name == AWAITING_RETRY
