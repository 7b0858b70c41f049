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


def test_on_commit_waits_for_the_outer_commit_past_savepoints(tmp_path: Path) -> None:
    """A change marked inside ``begin_nested`` is announced at the outer commit, not at the
    savepoint's release (which fires after_commit too, before anyone else can see the change); a
    rolled-back savepoint keeps what the outer transaction marked."""
    from sqlalchemy import text

    from orchestrator.server.db.session import make_engine, make_sessionmaker, on_commit

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    sessions = make_sessionmaker(engine)
    calls: list[str] = []
    remove = on_commit(sessions, "changed", lambda: calls.append("committed"))
    try:
        with sessions.begin() as session:
            with session.begin_nested():
                session.info["changed"] = True
            assert calls == []  # the savepoint's release announced nothing
            with pytest.raises(RuntimeError), session.begin_nested():
                session.execute(text("SELECT 1"))
                raise RuntimeError("this part failed")
            assert calls == []
        assert calls == ["committed"]  # the outer commit did, once
    finally:
        remove()
        engine.dispose()
