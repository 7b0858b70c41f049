"""Outgoing webhook calls of firings (``call-webhook``), made after the firing commits, off the
evaluation thread, at most once each.

A call is claimed (``pending`` -> ``calling``, committed) before it is sent, and its outcome
recorded after (``done`` / ``failed`` with ``orchestrator.automation.action.executed`` / ``.failed``).
A server that dies mid-call leaves it ``calling``: once its timeout and a margin have passed it is
marked failed, "outcome unknown" -- never sent twice. The request carries the header
``Idempotency-Key`` (automation, action, firing) so a receiver can drop a repeat of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import storable
from orchestrator.schemas.events import EventIn, related, resource
from orchestrator.server.db import models as m
from orchestrator.server.db.types import utcnow
from orchestrator.server.service import Service
from orchestrator.server.services import events

log = logging.getLogger("orchestrator.triggers.calls")
CLAIM_BATCH = 20
UNKNOWN_AFTER = dt.timedelta(seconds=120)  # a claimed call older than its timeout plus this is lost
RESPONSE_CHARS = 1000


def _outcome(session: Session, call: m.AutomationCall, reason: str | None, details: dict[str, Any]) -> None:
    call.state = "failed" if reason else "done"
    payload = {"action_index": call.action_index, "action_type": "call-webhook", "firing": str(call.firing_id),
               **details, **({"reason": reason} if reason else {})}
    links = [related("automation-triggered-event", f"orchestrator.event.{call.firing_id}")]
    if call.context.get("triggering_event"):
        links.append(related("triggering-event", f"orchestrator.event.{call.context['triggering_event']}"))
    name = "failed" if reason else "executed"
    events.record(session, [EventIn(
        event=f"orchestrator.automation.action.{name}", related=links, payload=payload, follows=call.firing_id,
        resource=resource(f"orchestrator.automation.{call.automation_id}", call.context.get("automation_name")))])


def send(request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Make one call: (None, details) on a 2xx, else (reason, details)."""
    headers = {"Idempotency-Key": request["idempotency_key"], **request["headers"]}
    data = request["body"].encode() if request["body"] else None
    outgoing = urllib.request.Request(request["url"], data=data, headers=headers, method=request["method"])
    try:  # the standard library's client: the server needs no HTTP client package for this
        with urllib.request.urlopen(outgoing, timeout=request["timeout_seconds"]) as response:  # noqa: S310
            status, text = response.status, response.read(RESPONSE_CHARS * 4).decode(errors="replace")
    except urllib.error.HTTPError as answer:  # an answer >= 400
        status, text = answer.code, answer.read(RESPONSE_CHARS * 4).decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as error:  # unreachable, timed out, bad URL
        return f"{type(error).__name__}: {error}", {"url": request["url"]}
    # An endpoint may answer anything; what is recorded must be storable (no NUL).
    details = {"url": request["url"], "status_code": status, "response_body": storable.escaped(text[:RESPONSE_CHARS])}
    if 200 <= status < 300:
        return None, details
    return f"the webhook answered {status}", details


class Caller(Service):
    """Claims pending calls and makes them in a small thread pool."""

    name = "automation-calls"

    def __init__(self, sessions: sessionmaker[Session], workers: int = 4) -> None:
        super().__init__()
        self.sessions = sessions
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="automation-call")

    def step(self) -> float:
        with self.sessions.begin() as session:
            self._give_up_lost(session)
            rows = list(session.scalars(select(m.AutomationCall).where(m.AutomationCall.state == "pending")
                                        .order_by(m.AutomationCall.created).limit(CLAIM_BATCH)
                                        .with_for_update(skip_locked=True)))
            claimed = []
            for row in rows:
                done = session.execute(update(m.AutomationCall).where(
                    m.AutomationCall.id == row.id, m.AutomationCall.state == "pending",
                ).values(state="calling", claimed_at=utcnow()).execution_options(synchronize_session=False))
                if done.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append((row.id, dict(row.request)))
        for call_id, request in claimed:
            self.pool.submit(self._call, call_id, request)
        return 0.0 if len(rows) == CLAIM_BATCH else 30.0

    def _call(self, call_id: uuid.UUID, request: dict[str, Any]) -> None:
        reason, details = send(request)
        try:
            with self.sessions.begin() as session:
                call = session.get(m.AutomationCall, call_id)
                if call is not None and call.state == "calling":
                    _outcome(session, call, reason, details)
        except Exception:  # noqa: BLE001 -- logged; the call stays 'calling' and is given up later
            log.exception("could not record the outcome of webhook call %s", call_id)

    def _give_up_lost(self, session: Session) -> None:
        cutoff = utcnow() - UNKNOWN_AFTER
        for call in session.scalars(select(m.AutomationCall).where(
                m.AutomationCall.state == "calling", m.AutomationCall.claimed_at < cutoff).limit(100)):
            if call.claimed_at and call.claimed_at + dt.timedelta(seconds=call.request["timeout_seconds"]) < cutoff:
                _outcome(session, call, "outcome unknown: the server stopped during the call (not retried)", {})

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.pool.shutdown(wait=True, cancel_futures=False)
