"""The restart-recovery decision every worker kind shares (workers/recovery.py), over every state,
holder and whether the leftover still runs; and workers are plain objects: two instances are two
workers (the Kubernetes and Docker workers were dataclasses without fields, so all compared equal
and none could be put in a set)."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.client import Client
from orchestrator.states import FINAL_STATES, StateType
from workers.recovery import Action, decide
from workers.registry import KINDS, worker_class


@pytest.mark.parametrize(("state", "holder", "running"),
                         list(itertools.product(StateType, ["me", "other", None], [True, False])))
def test_every_state_holder_and_liveness_has_one_action(state: StateType, holder: str | None, running: bool) -> None:
    action = decide(state, holder, "me", running)

    if state in FINAL_STATES or holder != "me":
        assert action is Action.CLEAN_UP  # nothing will read it again
    elif running and state != StateType.CANCELLING:
        assert action is Action.ADOPT
    else:
        assert action is Action.SETTLE  # exited unwatched, or a cancel never carried out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_two_workers_of_a_kind_are_two_distinct_hashable_objects(kind: str) -> None:
    cls = worker_class(kind)
    client = Client("http://127.0.0.1:9/api")  # never called: workers reach their services lazily
    one = cls(client, pool="p", name="one", api_url="http://127.0.0.1:9/api")
    two = cls(client, pool="p", name="two", api_url="http://127.0.0.1:9/api")

    assert one != two and one == one
    assert len({one, two}) == 2
