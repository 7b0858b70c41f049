"""The mark a transaction that changed automations leaves, and its announcement after the commit.

Apart from ``automations.py`` (which sets the mark and re-exports both names) so that a server
announces changes from its start without importing the automations' service and schemas: those
(~45 ms of a start's CPU, 4-5 % of it) load at the first request or pass that uses an automation.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from orchestrator.server.db.session import on_commit
from orchestrator.server.hub import AUTOMATIONS, Hub

CHANGED = "automations_changed"  # session.info flag: this transaction changed automations


def announce_changed(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``AUTOMATIONS`` after every commit that changed automations (evaluators re-read)."""
    return on_commit(sessions, CHANGED, lambda: hub.publish((AUTOMATIONS, "")))
