"""Incoming webhooks: ``POST /api/hooks/<slug>`` with the hook's secret turns any HTTP call into
an event, through the hook's template.

The template is Jinja (the sandboxed environment of ``schemas/templates.py``) that renders to the
event as JSON (``event``, ``resource``, optionally ``related``, ``payload``, ``occurred``, ``id``).
Its context: ``body`` (the JSON body parsed, else the form's fields, else the raw text),
``headers`` (lower-case names) and ``query``. The secret is shown once, at creation; only its
SHA-256 is stored (it is 32 random bytes: no slow hash needed), compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import uuid
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session

from orchestrator.errors import Conflict, InvalidInput, NotFound, Unauthorized
from orchestrator.schemas.base import InModel, OutModel
from orchestrator.schemas.events import EventIn
from orchestrator.schemas.templates import check_template, environment
from orchestrator.server.db import models as m
from orchestrator.server.db.base import Base
from orchestrator.server.services import events

_SLUG = re.compile(r"[^a-z0-9]+")


class WebhookCreate(InModel):
    name: str = Field(min_length=1, max_length=255)
    template: str = Field(min_length=2, max_length=100_000, description="Jinja rendering the event as JSON.")
    description: str = Field("", max_length=10_000)
    enabled: bool = True

    @field_validator("template", mode="before")
    @classmethod
    def _json_as_text(cls, value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict) else value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)


class Webhook(OutModel):
    id: uuid.UUID
    name: str
    slug: str
    template: str
    description: str
    enabled: bool
    url_path: str


class WebhookCreated(Webhook):
    secret: str = Field(description="Shown once: send it as the X-Orch-Webhook-Secret header or ?secret=.")


class WebhookRow(Base):
    """A row of ``webhooks`` (``db/models.py``). Mapped here, when a server first serves a webhook,
    rather than by every server at its start."""

    __table__ = m.webhooks
    id: Mapped[uuid.UUID]
    name: Mapped[str]
    slug: Mapped[str]
    secret_hash: Mapped[str]
    template: Mapped[str]
    description: Mapped[str]
    enabled: Mapped[bool]
    created: Mapped[dt.datetime]
    updated: Mapped[dt.datetime]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def to_schema(row: WebhookRow) -> Webhook:
    return Webhook(id=row.id, name=row.name, slug=row.slug, template=row.template, description=row.description,
                   enabled=row.enabled, url_path=f"/api/hooks/{row.slug}")


def create(session: Session, request: WebhookCreate) -> WebhookCreated:
    secret = secrets.token_urlsafe(32)
    slug = f"{_SLUG.sub('-', request.name.lower()).strip('-')[:40] or 'hook'}-{secrets.token_hex(4)}"
    row = WebhookRow(id=uuid.uuid4(), name=request.name, slug=slug, secret_hash=_hash(secret),
                    template=request.template, description=request.description, enabled=request.enabled)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict(f"a webhook named '{request.name}' exists already") from None
    return WebhookCreated(**to_schema(row).model_dump(), secret=secret)


def list_(session: Session) -> list[WebhookRow]:
    return list(session.scalars(select(WebhookRow).order_by(WebhookRow.name)))


def get(session: Session, ref: str) -> WebhookRow:
    """By id, name or slug."""
    try:
        row = session.get(WebhookRow, uuid.UUID(ref))
    except ValueError:
        row = session.scalar(select(WebhookRow).where((WebhookRow.name == ref) | (WebhookRow.slug == ref)))
    if row is None:
        raise NotFound(f"webhook '{ref}' not found")
    return row


def delete(session: Session, ref: str) -> None:
    session.delete(get(session, ref))
    session.flush()


class Call(BaseModel):
    body: Any
    headers: dict[str, str]
    query: dict[str, str]


def receive(session: Session, slug: str, secret: str | None, call: Call) -> EventIn:
    """Check the secret, render the template, record the event (in the caller's transaction)."""
    row = session.scalar(select(WebhookRow).where(WebhookRow.slug == slug))
    # An unknown slug and a wrong secret answer alike: a caller learns nothing about which hooks exist.
    if row is None or not row.enabled or secret is None or not hmac.compare_digest(_hash(secret), row.secret_hash):
        raise Unauthorized("unknown webhook or wrong secret (X-Orch-Webhook-Secret header or ?secret=)")
    try:
        text = environment().from_string(row.template).render(body=call.body, headers=call.headers, query=call.query)
    except Exception as error:  # noqa: BLE001 -- a template error is the hook's problem: 422 with the reason
        raise InvalidInput([{"loc": ["template"], "msg": f"template failed: {type(error).__name__}: {error}",
                             "type": "template"}]) from None
    try:
        event = EventIn.model_validate_json(text)
    except ValidationError as error:
        raise InvalidInput([{"loc": ["template", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                            for e in error.errors(include_url=False, include_context=False, include_input=False)]
                           ) from None
    events.record(session, [event])
    return event
