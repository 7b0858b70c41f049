"""API keys: created (the secret returned once), listed, revoked, and verified (docs/security.md).

A key reads ``orch_<prefix>_<secret>``: the prefix (12 hex digits, not secret) finds the row, and
the row holds the SHA-256 of the whole key, compared in constant time. A fast hash is enough here,
and right: a key carries 256 random bits, so nobody can guess it from its hash whatever the hash
costs; bcrypt or argon2 make *low-entropy passwords* expensive to guess, which a random key is not,
and they would cost ~100 ms of CPU on every request that misses the cache.

A flow run's own key (``create_run_key``, at its claim) has no scope of its own: it may call the
routes marked ``own_run`` in ``server/api/scopes.py``, for its run only, and stops working
``grace`` after its run ends.

Every change publishes ``API_KEYS`` on the hub after commit (``announce_changed``): the key caches
of every replica (``server/api/gate.py``) forget what they knew, so a revocation takes effect on
the next request anywhere.

The gate uses this module on every server (``any_keys``, ``verify``, ``Principal``); the API keys'
models (``schemas.api_keys``: ``create``, ``to_schema``) are imported by the calls that answer with
them, the API keys' routes, a family loaded at its first request (``api/lazy.py``): a server whose
keys are never listed or created does not build them (~20 M instructions of its start,
bench/RESULTS.md, "Server cold start, round 10").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import Conflict, NotFound
from orchestrator.schemas.scopes import Scope, granted
from orchestrator.server.db import models as m
from orchestrator.server.db.session import on_commit
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import API_KEYS, Hub
from orchestrator.server.services import keyset
from orchestrator.states import FINAL_STATES

if TYPE_CHECKING:
    from orchestrator.schemas.api_keys import ApiKey, ApiKeyCreate, ApiKeyCreated

CHANGED = "api_keys_changed"  # session.info flag: this transaction created or revoked keys
KEY_FORMAT = re.compile(r"^orch_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
LAST_USED_EVERY = dt.timedelta(minutes=1)  # ``last_used`` is written at most this often per key


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"orch_{prefix}_{secrets.token_urlsafe(32)}"


def create(session: Session, request: ApiKeyCreate, *, now: dt.datetime | None = None) -> ApiKeyCreated:
    """A new key; its secret is in the answer and nowhere else. 409 when the name is taken (a revoked
    key keeps its name: the history of who did what stays unambiguous)."""
    from orchestrator.schemas.api_keys import ApiKeyCreated  # the keys' routes' models (module docstring)

    if session.scalar(select(exists().where(m.ApiKey.name == request.name))):
        raise Conflict(f"an API key named '{request.name}' exists already (revoked keys keep their names)")
    now = now or utcnow()
    prefix, key = _new_key()
    row = m.ApiKey(id=uuid.uuid4(), name=request.name, prefix=prefix, hash=digest(key),
                   scopes=sorted(set(request.scopes)), pools=sorted(set(request.pools)) if request.pools else None,
                   created=now, expires=now + request.expires_in if request.expires_in else None)
    session.add(row)
    session.flush()
    session.info[CHANGED] = True
    return ApiKeyCreated(**to_schema(row).model_dump(), secret=key)


def create_run_key(session: Session, run_id: uuid.UUID) -> str:
    """The key a flow run's process gets instead of its worker's (see the module docstring)."""
    prefix, key = _new_key()
    session.add(m.ApiKey(id=uuid.uuid4(), name=f"run {run_id} {prefix}", prefix=prefix, hash=digest(key),
                         scopes=[], pools=None, run_id=run_id, created=utcnow()))
    # No CHANGED: a new key is unknown to every cache already, and run keys never open or close
    # the server (``any_keys`` ignores them).
    return key


def to_schema(row: m.ApiKey) -> ApiKey:
    from orchestrator.schemas.api_keys import ApiKey  # the keys' routes' models (module docstring)

    return ApiKey.model_validate(row)


def list_(session: Session, *, include_run_keys: bool = False, offset: int = 0, limit: int = 200) -> list[m.ApiKey]:
    return page(session, include_run_keys=include_run_keys, offset=offset, limit=limit)[0]


OLDEST_FIRST = keyset.Order((m.ApiKey.created, m.ApiKey.name))  # names are unique


def page(session: Session, *, include_run_keys: bool = False, cursor: str | None = None, offset: int = 0,
         limit: int = 200) -> tuple[list[m.ApiKey], str | None]:
    """Keys, oldest first, after ``cursor``; and the next cursor."""
    statement = select(m.ApiKey)
    if not include_run_keys:
        statement = statement.where(m.ApiKey.run_id.is_(None))
    return keyset.page_or_offset(session, statement, OLDEST_FIRST, limit, cursor=cursor, offset=offset)


def get(session: Session, ref: str) -> m.ApiKey:
    """A key by its id, name or prefix."""
    try:
        row = session.get(m.ApiKey, uuid.UUID(ref))
    except ValueError:
        row = None
    row = row or session.scalar(select(m.ApiKey).where((m.ApiKey.name == ref) | (m.ApiKey.prefix == ref)))
    if row is None:
        raise NotFound(f"API key '{ref}' not found")
    return row


def revoke(session: Session, ref: str) -> m.ApiKey:
    """Revoke a key at once on every replica (idempotent: a revoked key keeps its first date)."""
    row = get(session, ref)
    if row.revoked is None:
        row.revoked = utcnow()
        session.info[CHANGED] = True
    return row


def any_keys(session: Session) -> bool:
    """Whether a key was ever created (revoked ones count: revoking the last key must not open the
    server). Run keys do not count: they only exist on a server that has keys."""
    return bool(session.scalar(select(exists().where(m.ApiKey.run_id.is_(None)))))


@dataclass(frozen=True)
class Principal:
    """Who a request is. ``scopes`` are the granted ones (``schemas.scopes.GRANTS`` applied)."""

    scopes: frozenset[Scope]
    fingerprint: str | None  # for the deployment history; None on an open server
    key_id: uuid.UUID | None = None
    pools: frozenset[str] | None = None  # a worker key limited to these pools
    run_id: uuid.UUID | None = None  # a flow run's own key
    deployment_id: uuid.UUID | None = None  # ... and its run's deployment
    expires: dt.datetime | None = None
    run_ended: dt.datetime | None = None

    def refusal(self, now: dt.datetime, grace: dt.timedelta) -> str | None:
        """Why the key no longer works (None while it does)."""
        if self.expires is not None and self.expires <= now:
            return "expired"
        if self.run_ended is not None and self.run_ended + grace <= now:
            return "expired"
        return None


def verify(session: Session, key: str, *, now: dt.datetime | None = None) -> Principal | str:
    """The principal of ``key``, or why it is refused: ``invalid`` or ``revoked`` (expiry is the
    caller's check, ``Principal.refusal``, so a cached principal expires on time)."""
    match = KEY_FORMAT.match(key)
    if match is None:
        return "invalid"
    row = session.scalar(select(m.ApiKey).where(m.ApiKey.prefix == match.group(1)))
    if row is None or not hmac.compare_digest(row.hash, digest(key)):
        return "invalid"
    if row.revoked is not None:
        return "revoked"
    now = now or utcnow()
    if row.last_used is None or now - row.last_used >= LAST_USED_EVERY:
        row.last_used = now
    deployment_id = run_ended = None
    if row.run_id is not None:
        run = session.get(m.FlowRun, row.run_id)
        if run is None:
            return "invalid"
        deployment_id = run.deployment_id
        run_ended = run.state_timestamp if run.state_type in FINAL_STATES else None
    return Principal(scopes=granted([Scope(s) for s in row.scopes]), fingerprint="key:" + row.prefix, key_id=row.id,
                     pools=frozenset(row.pools) if row.pools is not None else None, run_id=row.run_id,
                     deployment_id=deployment_id, expires=row.expires, run_ended=run_ended)


def announce_changed(sessions: sessionmaker[Session], hub: Hub) -> Callable[[], None]:
    """Publish ``API_KEYS`` after every commit that created or revoked keys."""
    return on_commit(sessions, CHANGED, lambda: hub.publish((API_KEYS, "")))
