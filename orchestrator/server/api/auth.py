"""Optional bearer keys: when ``ORCH_SERVER_API_KEYS`` is set, every route but health needs one."""

from __future__ import annotations

import hmac

from fastapi import Request

from orchestrator.errors import Unauthorized


async def require_api_key(request: Request) -> None:
    # async: FastAPI runs a plain ``def`` dependency on the thread pool, a hop per request for what
    # is a set lookup.
    keys: frozenset[str] = request.app.state.ctx.settings.accepted_api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (ORCH_API_KEY)")
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise Unauthorized("invalid API key")
