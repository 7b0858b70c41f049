"""Who a request is: ``Gate.authenticate`` turns the key a request presents into a ``Principal``,
with a small cache, failure counters for ``/metrics`` and a per-address limit on failures.

* **Open or closed.** With no ``ORCH_SERVER_API_KEYS`` and no key ever created, the server is open
  (local use): every request is an admin. The first key created closes it, on every replica.
* **Bootstrap keys.** ``ORCH_SERVER_API_KEYS`` are admin keys, compared in constant time.
* **The cache.** A verified key is remembered (by its SHA-256) for ``ttl`` seconds, so a request
  costs a hash and a dict lookup, not a query. Any key change published on the hub (``API_KEYS``,
  from this replica or another) empties it, so a revocation takes effect on the next request; the
  ``ttl`` bounds staleness where the hub cannot reach (several servers on one SQLite file). A
  generation counter keeps a read that raced a revocation from caching what it read.
* **Failures** (missing, invalid, revoked, expired key) are counted by reason; an address with
  ``limit`` failures in the last minute gets 429 with ``Retry-After`` until the oldest ages out,
  whatever key it sends (a guesser learns nothing more). Behind a proxy every client shares its
  address: raise the limit there.
"""

from __future__ import annotations

import collections
import datetime as dt
import hmac
import threading
import time
from typing import NoReturn

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from orchestrator.errors import RateLimited, Unauthorized
from orchestrator.schemas.scopes import Scope
from orchestrator.server.db.types import utcnow
from orchestrator.server.hub import API_KEYS, Hub
from orchestrator.server.services import api_keys
from orchestrator.server.services.api_keys import Principal

UI_KEY_COOKIE = "orch_ui_key"
UI_HEADER = "x-orch-ui"
OPEN = Principal(scopes=frozenset(Scope), fingerprint=None)  # anyone, on an open server
WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000  # failure windows kept; the oldest address is forgotten beyond this
REASONS = ("missing", "invalid", "revoked", "expired", "rate_limited")
DETAILS = {
    "missing": "missing API key: send 'Authorization: Bearer <key>' (ORCH_API_KEY)",
    "invalid": "invalid API key",
    "revoked": "API key revoked",
    "expired": "API key expired",
}


def presented_key(request: Request) -> str | None:
    """The key a request carries: its bearer token, else (from the UI's scripts, which send the
    header ``X-Orch-UI`` no other site's page can send) the UI's HTTP-only cookie."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        return given
    if request.headers.get(UI_HEADER):
        return request.cookies.get(UI_KEY_COOKIE) or None
    return None


def fingerprint(key: str) -> str:
    """``sha256:`` and 16 hex digits of a bootstrap key's hash: tells keys apart in the history."""
    return "sha256:" + api_keys.digest(key)[:16]


class Gate:
    def __init__(self, sessions: sessionmaker[Session], hub: Hub, bootstrap: frozenset[str], *, ttl: float,
                 failures_per_minute: int, run_key_grace: dt.timedelta) -> None:
        self._sessions = sessions
        self._bootstrap = bootstrap
        self._ttl = ttl
        self._limit = failures_per_minute
        self._grace = run_key_grace
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Principal, float]] = {}  # key digest -> principal, cached at
        self._generation = 0
        self._any_keys: tuple[bool, float] | None = None  # and when it was read
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self.failures_total: dict[str, int] = dict.fromkeys(REASONS, 0)  # for /metrics
        self._subscription = hub.subscribe(API_KEYS, self._forget)

    def close(self) -> None:
        self._subscription.close()

    def _forget(self, _key: str) -> None:
        with self._lock:
            self._known.clear()
            self._any_keys = None
            self._generation += 1

    # --- open or closed ------------------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether keys are required (blocking on the first call after a change: thread pool)."""
        if self._bootstrap:
            return True
        fast = self.maybe_enabled_fast()
        if fast is not None:
            return fast
        with self._lock:
            generation = self._generation
        with self._sessions() as session:
            known = api_keys.any_keys(session)
        with self._lock:
            if generation == self._generation:
                self._any_keys = (known, time.monotonic())
        return known

    def maybe_enabled_fast(self) -> bool | None:
        """``enabled()`` without blocking, or None when it needs the database."""
        if self._bootstrap:
            return True
        known = self._any_keys
        if known is None or time.monotonic() - known[1] >= self._ttl:
            return None
        return known[0]

    # --- who ---------------------------------------------------------------------------------

    async def authenticate(self, request: Request) -> Principal:
        """The request's principal (memoized on the request); 401 / 429 as the module says."""
        done = getattr(request.state, "principal", None)
        if done is not None:
            return done  # type: ignore[no-any-return]
        principal = await self._authenticate(request)
        request.state.principal = principal
        return principal

    async def in_use(self) -> bool:
        """``enabled()`` from the event loop (a thread-pool hop only when it must read)."""
        enabled = self.maybe_enabled_fast()
        return enabled if enabled is not None else await run_in_threadpool(self.enabled)

    async def _authenticate(self, request: Request) -> Principal:
        if not await self.in_use():
            return OPEN
        address = request.client.host if request.client else ""
        return await self.check(presented_key(request), address)

    async def check(self, given: str | None, address: str) -> Principal:
        """The principal of the key ``given`` from ``address`` on a closed server; 401 / 429."""
        self._check_rate(address)
        if not given:
            self._fail(address, "missing")
        if self._bootstrap and any(hmac.compare_digest(given.encode(), k.encode()) for k in self._bootstrap):
            return Principal(scopes=frozenset(Scope), fingerprint=fingerprint(given))
        key_digest = api_keys.digest(given)
        now = time.monotonic()
        with self._lock:
            cached = self._known.get(key_digest)
        if cached is not None and now - cached[1] < self._ttl:
            found: Principal | str = cached[0]
        else:
            found = await run_in_threadpool(self._verify, given, key_digest)
        if isinstance(found, str):
            self._fail(address, found)
        refusal = found.refusal(utcnow(), self._grace)
        if refusal is not None:
            self._fail(address, refusal)
        return found

    def _verify(self, key: str, key_digest: str) -> Principal | str:
        with self._lock:
            generation = self._generation
        with self._sessions.begin() as session:  # a transaction: it may refresh ``last_used``
            found = api_keys.verify(session, key)
        if isinstance(found, Principal):
            with self._lock:
                if generation == self._generation:  # no change committed while we read
                    self._known[key_digest] = (found, time.monotonic())
        return found

    # --- failures ------------------------------------------------------------------------------

    def _check_rate(self, address: str) -> None:
        with self._lock:
            window = self._failures.get(address)
            if window is None:
                return
            now = time.monotonic()
            while window and window[0] <= now - WINDOW_SECONDS:
                window.popleft()
            if len(window) < self._limit:
                return
            retry_after = max(1, int(window[0] + WINDOW_SECONDS - now + 0.999))
            self.failures_total["rate_limited"] += 1
        raise RateLimited(f"too many failed authentications from {address or 'this address'}: "
                          f"retry in {retry_after} s", retry_after=retry_after)

    def _fail(self, address: str, reason: str) -> NoReturn:
        with self._lock:
            self.failures_total[reason] += 1
            window = self._failures.pop(address, None) or collections.deque()
            window.append(time.monotonic())
            self._failures[address] = window  # most recent last
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
        raise Unauthorized(DETAILS[reason])
