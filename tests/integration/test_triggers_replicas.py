"""Two evaluators on one PostgreSQL database (two replicas) evaluate each event once and fire each
firing once, while events keep arriving; one killed mid-pass (its transaction rolled back) loses
nothing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator.schemas.automations import AutomationCreate
from orchestrator.schemas.events import EventIn
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker
from orchestrator.server.services import automations, events
from orchestrator.server.triggers.evaluator import Evaluator, Raced


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[Any]:
    """Two session makers on one database, as two replicas have."""
    engines = [make_engine(postgres_url), make_engine(postgres_url)]
    yield [make_sessionmaker(engine) for engine in engines]
    for engine in engines:
        engine.dispose()


def _triggered(sessions: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(m.Event).where(
            m.Event.event == "orchestrator.automation.triggered")) or 0)


def test_two_replicas_fire_each_firing_once(replicas: Any) -> None:
    one, two = replicas
    with one.begin() as session:
        automations.create(session, AutomationCreate.model_validate({
            "name": "every-third", "trigger": {"expect": ["tick"], "threshold": 3, "within": 0,
                                               "for_each": ["orchestrator.resource.id"]},
            "actions": [{"type": "do-nothing"}]}))
        automations.create(session, AutomationCreate.model_validate({
            "name": "each", "trigger": {"expect": ["tick"]}, "actions": [{"type": "do-nothing"}]}))
    evaluators = [Evaluator(one), Evaluator(two)]
    for evaluator in evaluators:
        evaluator.run_pass()  # creates the cursor: evaluation starts from here
    done = threading.Event()
    errors: list[BaseException] = []

    def evaluate(evaluator: Evaluator) -> None:
        try:
            while not done.is_set():
                try:
                    evaluator.run_pass()
                except Raced:
                    pass
        except BaseException as error:  # noqa: BLE001 -- reported by the test
            errors.append(error)

    threads = [threading.Thread(target=evaluate, args=(e,)) for e in evaluators]
    for thread in threads:
        thread.start()
    sent = 0
    for batch in range(30):
        with one.begin() as session:
            events.record(session, [EventIn(event="tick", resource={"orchestrator.resource.id": f"thing.{i % 2}"})
                                    for i in range(10)])
            sent += 10
    # The last events in: let both drain them, then stop.
    while True:
        with one() as session:
            cursor = session.get(m.TriggerCursor, "triggers")
            top = session.scalar(select(func.max(m.Event.seq)).where(m.Event.event == "tick"))
            if cursor is not None and cursor.floor >= (top or 0):
                break
    done.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    # "each" fires 300 times; "every-third": 150 ticks per thing -> 50 each.
    assert _triggered(one) == sent + 2 * (sent // 2 // 3)


def test_a_pass_that_dies_is_rolled_back_and_done_again(replicas: Any) -> None:
    sessions = replicas[0]
    with sessions.begin() as session:
        automations.create(session, AutomationCreate.model_validate({
            "name": "each", "trigger": {"expect": ["tick"]}, "actions": [{"type": "do-nothing"}]}))
    evaluator = Evaluator(sessions)
    evaluator.run_pass()
    with sessions.begin() as session:
        events.record(session, [EventIn(event="tick", resource={"orchestrator.resource.id": "x"}, id=uuid.uuid4())])

    class Killed(Exception):
        pass

    def die(*_: Any) -> None:
        raise Killed()

    original = evaluator._clock
    evaluator._clock = die  # type: ignore[method-assign]
    try:
        evaluator.run_pass()
    except Killed:
        pass
    assert _triggered(sessions) == 0
    evaluator._clock = original  # type: ignore[method-assign]
    replica = Evaluator(sessions)
    replica.run_pass()
    assert _triggered(sessions) == 1
    replica.run_pass()
    assert _triggered(sessions) == 1


def test_replicas_starting_on_a_new_database_create_the_cursor_once(replicas: Any) -> None:
    """A new database has no cursor row (the models' schema, not migration 0008): two replicas'
    first passes both find none and create it; the second waits for the first and then leaves
    the pass to it instead of failing on the duplicate key."""
    from orchestrator.server.triggers import cursor as cursors

    first, second = replicas
    with first.begin() as session:
        session.query(m.TriggerCursor).delete()
    outcome: list[Any] = []
    with first.begin() as session:
        assert cursors.lock(session) is not None  # created, not committed yet
        waiter = threading.Thread(target=lambda: outcome.append(_lock_in(second, cursors)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()  # waits on the first replica's uncommitted row
    waiter.join(10)
    assert outcome == [None]  # the first replica's: this pass is skipped, no duplicate-key failure
    with second() as session:
        assert session.scalar(select(func.count()).select_from(m.TriggerCursor)) == 1


def _lock_in(sessions: Any, cursors: Any) -> Any:
    with sessions.begin() as session:
        return cursors.lock(session)
