"""The hub conformance suite (tests/hub_conformance.py) over the in-process ``LocalHub``, replicas
sharing one ``LocalBus``; and ``on_commit``, which makes "publish after commit" hold for a change
made in a transaction that is still open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.server.hub import Hub
from orchestrator.server.hub.local import LocalBus, LocalHub
from tests.hub_conformance import *  # noqa: F403 -- the shared suite
from tests.hub_conformance import Replica


@pytest.fixture
def replica() -> Iterator[Replica]:
    bus = LocalBus()
    hubs: list[Hub] = []

    def make() -> Hub:
        hub = LocalHub(bus)
        hub.start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def test_on_commit_announces_committed_changes_only(tmp_path: Path) -> None:
    from sqlalchemy import text

    from orchestrator.server.db.session import make_engine, make_sessionmaker, on_commit

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    sessions = make_sessionmaker(engine)
    calls: list[str] = []
    remove = on_commit(sessions, "changed", lambda: calls.append("committed"))
    try:
        with pytest.raises(RuntimeError), sessions.begin() as session:
            session.execute(text("SELECT 1"))
            session.info["changed"] = True
            raise RuntimeError("rolled back")
        assert calls == []
        with sessions.begin() as session:
            session.execute(text("SELECT 1"))  # a transaction without the mark announces nothing
        assert calls == []
        with sessions.begin() as session:
            session.info["changed"] = True
        assert calls == ["committed"]
    finally:
        remove()
        engine.dispose()
