"""Concurrency slots: which due runs may start now. Pure, so every rule is unit-tested.

Limits apply to a work pool, a work queue and a deployment; a run starts only when all three have
a free slot. Candidates are considered in strict priority order (queue priority 1 first, then
oldest first), so when slots are scarce the most important queue goes first -- and a queue or
deployment blocked at its own limit is skipped, never delaying the runs of others.

A deployment at its limit either makes the run wait (``ENQUEUE``: named AwaitingConcurrencySlot,
served first-in first-out as slots free) or cancels it (``CANCEL_NEW``).
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    run_id: uuid.UUID
    pool: str
    queue: str
    deployment_id: uuid.UUID | None
    priority: int


@dataclass(frozen=True)
class Limits:
    pools: Mapping[str, int | None]
    queues: Mapping[tuple[str, str], int | None]
    deployments: Mapping[uuid.UUID, tuple[int | None, str]]  # (limit, collision strategy)


@dataclass
class Occupied:
    """Slots in use: runs claimed or running, and runs published but not yet claimed."""

    pools: collections.Counter[str] = field(default_factory=collections.Counter)
    queues: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    deployments: collections.Counter[uuid.UUID] = field(default_factory=collections.Counter)

    def take(self, c: Candidate) -> None:
        self.pools[c.pool] += 1
        self.queues[(c.pool, c.queue)] += 1
        if c.deployment_id is not None:
            self.deployments[c.deployment_id] += 1


@dataclass
class Plan:
    publish: list[Candidate] = field(default_factory=list)
    wait: list[Candidate] = field(default_factory=list)  # deployment full, ENQUEUE
    cancel: list[Candidate] = field(default_factory=list)  # deployment full, CANCEL_NEW
    blocked: list[Candidate] = field(default_factory=list)  # pool or queue full


def _full(limit: int | None, used: int) -> bool:
    return limit is not None and used >= limit


def plan(candidates: Iterable[Candidate], limits: Limits, occupied: Occupied) -> Plan:
    result = Plan()
    for c in sorted(candidates, key=lambda c: c.priority):  # stable: keeps the oldest-first order
        if _full(limits.pools.get(c.pool), occupied.pools[c.pool]) or _full(
            limits.queues.get((c.pool, c.queue)), occupied.queues[(c.pool, c.queue)]
        ):
            result.blocked.append(c)
            continue
        if c.deployment_id is not None:
            limit, strategy = limits.deployments.get(c.deployment_id, (None, "ENQUEUE"))
            if _full(limit, occupied.deployments[c.deployment_id]):
                (result.cancel if strategy == "CANCEL_NEW" else result.wait).append(c)
                continue
        occupied.take(c)
        result.publish.append(c)
    return result
