"""The API's keys, as routes and the UI see them: ``require_api_key`` (401 without a valid key when
keys are in use) and the UI's cookie. Who a key is and what it may do live in ``gate.py`` (the
principal, its cache, failures) and ``scopes.py`` (the route table); docs/security.md.

The web UI (``orchestrator/server/ui``) keeps the key a person typed in an HTTP-only,
SameSite=Strict cookie; its scripts call these same routes with that cookie and the header
``X-Orch-UI`` (a header no other site's page can send without this server's consent, so the
cookie alone never authorises a request)."""

from fastapi import Request

from orchestrator.server.api.gate import UI_HEADER, UI_KEY_COOKIE, presented_key
from orchestrator.server.services.api_keys import Principal


async def require_api_key(request: Request) -> Principal:
    """The request's principal; 401 (or 429) when keys are in use and it has no valid one."""
    return await request.app.state.ctx.gate.authenticate(request)  # type: ignore[no-any-return]


__all__ = ["UI_HEADER", "UI_KEY_COOKIE", "presented_key", "require_api_key"]
