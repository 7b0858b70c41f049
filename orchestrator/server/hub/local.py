"""The in-process hub: the embedded default (one server on a SQLite file).

Events reach every subscriber of this hub synchronously, in the publisher's thread, right after
its commit. Hubs built on one shared ``LocalBus`` behave like replicas of one deployment (the
conformance suite runs its cross-replica tests over that); by default each hub has its own bus.
"""

from __future__ import annotations

import threading

from orchestrator.server.hub import Event, Hub


class LocalBus:
    """What several in-process hubs share, standing in for the database they would share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hubs: list[LocalHub] = []


class LocalHub(Hub):
    def __init__(self, bus: LocalBus | None = None) -> None:
        super().__init__()
        self._bus = bus or LocalBus()
        with self._bus.lock:
            self._bus.hubs.append(self)

    def _send(self, events: tuple[Event, ...]) -> None:
        with self._bus.lock:
            others = [hub for hub in self._bus.hubs if hub is not self]
        for hub in others:
            hub._deliver(events)

    def close(self) -> None:
        with self._bus.lock:
            if self in self._bus.hubs:
                self._bus.hubs.remove(self)


__all__ = ["LocalHub", "LocalBus"]
