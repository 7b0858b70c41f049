"""What a trigger pass announces once its transaction commits.

Apart from ``actions.py`` (which re-exports it) because every pass makes one, while the actions and
their schemas are only needed by a pass that fires: a server with no automation starts and passes
over events without importing them (``evaluator.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from orchestrator.server.db import models as m
from orchestrator.server.hub import Event as HubEvent


@dataclass
class AfterCommit:
    """What the evaluator announces once its transaction commits."""

    # the firings' own events, each the JSON text of a row as ``services.events.event_rows`` shapes
    # them (``firing.py`` says why text), and their names: recorded once per pass
    events: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    quotes: dict[uuid.UUID, Any] = field(default_factory=dict)  # ``firing._quote`` per triggering event
    runs: list[m.FlowRun] = field(default_factory=list)  # created: publish to the broker
    hub: list[HubEvent] = field(default_factory=list)
    calls: int = 0  # outgoing webhook calls queued
