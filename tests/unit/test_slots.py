"""Concurrency slot planning (pools/slots.py)."""

from __future__ import annotations

import uuid

from pools.slots import Candidate, Limits, Occupied, plan

D1, D2 = uuid.uuid4(), uuid.uuid4()


def c(pool: str = "p", queue: str = "default", deployment: uuid.UUID | None = D1, priority: int = 1) -> Candidate:
    return Candidate(uuid.uuid4(), pool, queue, deployment, priority)


def limits(pools: dict[str, int | None] | None = None, queues: dict[tuple[str, str], int | None] | None = None,
           deployments: dict[uuid.UUID, tuple[int | None, str]] | None = None) -> Limits:
    return Limits(pools or {}, queues or {}, deployments or {})


def test_no_limits_publishes_everything_in_order() -> None:
    runs = [c(), c(), c()]
    assert plan(runs, limits(), Occupied()).publish == runs


def test_pool_limit_counts_what_is_already_occupied() -> None:
    occupied = Occupied()
    occupied.pools["p"] = 1
    runs = [c(), c(), c()]
    result = plan(runs, limits(pools={"p": 2}), occupied)
    assert result.publish == runs[:1] and result.blocked == runs[1:]


def test_strict_priority_when_slots_are_scarce() -> None:
    low, high = c(queue="low", priority=5), c(queue="high", priority=1)
    result = plan([low, high], limits(pools={"p": 1}), Occupied())
    assert result.publish == [high] and result.blocked == [low]


def test_a_queue_at_its_limit_does_not_delay_other_queues() -> None:
    full = [c(queue="busy", priority=1), c(queue="busy", priority=1)]
    other = c(queue="other", priority=2)
    result = plan([*full, other], limits(queues={("p", "busy"): 1}), Occupied())
    assert result.publish == [full[0], other]
    assert result.blocked == [full[1]]


def test_a_deployment_at_its_limit_does_not_delay_others() -> None:
    first, second, other = c(deployment=D1), c(deployment=D1), c(deployment=D2)
    result = plan([first, second, other], limits(deployments={D1: (1, "ENQUEUE")}), Occupied())
    assert result.publish == [first, other]
    assert result.wait == [second]


def test_cancel_new_cancels_runs_over_the_deployment_limit() -> None:
    occupied = Occupied()
    occupied.deployments[D1] = 2
    run = c()
    result = plan([run], limits(deployments={D1: (2, "CANCEL_NEW")}), occupied)
    assert result.cancel == [run] and result.publish == []


def test_zero_pool_limit_starts_nothing() -> None:
    run = c()
    assert plan([run], limits(pools={"p": 0}), Occupied()).blocked == [run]


def test_enqueued_runs_keep_fifo_order() -> None:
    runs = [c() for _ in range(4)]
    result = plan(runs, limits(deployments={D1: (2, "ENQUEUE")}), Occupied())
    assert result.publish == runs[:2] and result.wait == runs[2:]
