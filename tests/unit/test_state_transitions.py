"""``orchestrator.states``: the transition table and its two views."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.states import (
    DEFAULT_NAMES,
    FINAL_STATES,
    GUARDS,
    HELD,
    TRANSITIONS,
    UNHELD,
    StateType,
    allowed_sources,
    guards_of,
    is_allowed,
)

ALL_STATES = list(StateType)
NON_FINAL = [s for s in ALL_STATES if s not in FINAL_STATES]


def test_every_state_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(StateType)


def test_every_target_is_a_known_state() -> None:
    for targets in TRANSITIONS.values():
        assert targets <= set(StateType)


def test_every_state_has_a_default_name() -> None:
    assert set(DEFAULT_NAMES) == set(StateType)
    assert len(set(DEFAULT_NAMES.values())) == len(DEFAULT_NAMES)


def test_final_states_are_the_four_terminal_ones() -> None:
    assert FINAL_STATES == {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_have_no_exits(state: StateType) -> None:
    assert TRANSITIONS[state] == frozenset()
    assert not any(is_allowed(state, target) for target in StateType)


@pytest.mark.parametrize("state", NON_FINAL)
def test_non_final_states_have_exits(state: StateType) -> None:
    assert TRANSITIONS[state]


@pytest.mark.parametrize("state", NON_FINAL)
def test_every_non_final_state_can_reach_a_final_state(state: StateType) -> None:
    seen = {state}
    frontier = [state]
    while frontier:
        current = frontier.pop()
        for nxt in TRANSITIONS[current] - seen:
            seen.add(nxt)
            frontier.append(nxt)

    assert seen & FINAL_STATES


@pytest.mark.parametrize("source, target", list(itertools.product(StateType, StateType)))
def test_allowed_sources_agrees_with_is_allowed(source: StateType, target: StateType) -> None:
    assert (source in allowed_sources(target)) == is_allowed(source, target)
    assert is_allowed(source, target) == (target in TRANSITIONS[source])


def test_allowed_sources_of_pending_is_only_scheduled() -> None:
    assert allowed_sources(StateType.PENDING) == {StateType.SCHEDULED}


def test_no_state_leads_to_itself_except_scheduled() -> None:
    assert [s for s in StateType if is_allowed(s, s)] == [StateType.SCHEDULED]


def test_scheduled_to_pending_is_allowed() -> None:
    assert is_allowed(StateType.SCHEDULED, StateType.PENDING)


def test_pending_to_pending_is_not_allowed() -> None:
    # A second claim of the same run must lose: the claim is SCHEDULED -> PENDING only.
    assert not is_allowed(StateType.PENDING, StateType.PENDING)


@pytest.mark.parametrize("target", ALL_STATES)
def test_completed_goes_nowhere(target: StateType) -> None:
    assert not is_allowed(StateType.COMPLETED, target)


def test_scheduled_cannot_finish_without_running() -> None:
    assert not is_allowed(StateType.SCHEDULED, StateType.COMPLETED)
    assert not is_allowed(StateType.SCHEDULED, StateType.FAILED)


def test_scheduled_crashes_only_when_held() -> None:
    """A run between in-process retries whose process died, with no worker to start it again (a
    flow called directly), is CRASHED; a run waiting for any worker never is."""
    assert is_allowed(StateType.SCHEDULED, StateType.CRASHED)
    assert guards_of(StateType.SCHEDULED, StateType.CRASHED) == {HELD}


def test_cancelling_can_still_finish_on_its_own() -> None:
    for final in FINAL_STATES:
        assert is_allowed(StateType.CANCELLING, final)
    assert not is_allowed(StateType.CANCELLING, StateType.RUNNING)


def test_state_type_values_are_their_names() -> None:
    for state in StateType:
        assert state.value == state.name
        assert StateType(state.name) is state


def test_guards_name_allowed_pairs_only() -> None:
    """A guard on a pair the table forbids would never be checked: a mistake in the table."""
    for (source, target), names in GUARDS.items():
        assert is_allowed(source, target), (source, target)
        assert names <= {UNHELD, HELD}
        assert guards_of(source, target) == names
    assert guards_of(StateType.RUNNING, StateType.COMPLETED) == frozenset()
