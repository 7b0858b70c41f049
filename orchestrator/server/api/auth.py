"""Optional bearer keys: when ``ORCH_SERVER_API_KEYS`` is set, every route but health needs one.

The web UI (``orchestrator/server/ui``) keeps the key a person typed in an HTTP-only,
SameSite=Strict cookie; its scripts call these same routes with that cookie and the header
``X-Orch-UI`` (a header no other site's page can send without this server's consent, so the
cookie alone never authorises a request)."""

from __future__ import annotations

import hmac

from fastapi import Request

from orchestrator.errors import Unauthorized

UI_KEY_COOKIE = "orch_ui_key"
UI_HEADER = "x-orch-ui"


def presented_key(request: Request) -> str | None:
    """The key a request carries: its bearer token, else (from the UI's scripts) the UI's cookie."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        return given
    if request.headers.get(UI_HEADER):
        return request.cookies.get(UI_KEY_COOKIE) or None
    return None


def key_accepted(keys: frozenset[str], given: str) -> bool:
    return any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


async def require_api_key(request: Request) -> None:
    # async: FastAPI runs a plain ``def`` dependency on the thread pool, a hop per request for what
    # is a set lookup.
    keys: frozenset[str] = request.app.state.ctx.settings.accepted_api_keys
    if not keys:
        return
    given = presented_key(request)
    if not given:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (ORCH_API_KEY)")
    if not key_accepted(keys, given):
        raise Unauthorized("invalid API key")
