"""Who made a change, for the deployment history: ``key:<prefix>`` of a stored key, a fingerprint
of a bootstrap key (``sha256:`` and 16 hex digits of its hash, never the key itself), or None when
the server is open."""

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.server.api.gate import fingerprint


async def _key_fingerprint(request: Request) -> str | None:
    # async: a plain ``def`` dependency would cost a thread-pool hop. The key was checked already
    # (``scopes.authorize``); this only says which one it was.
    principal = await request.app.state.ctx.gate.authenticate(request)
    return principal.fingerprint  # type: ignore[no-any-return]


KeyFingerprint = Annotated[str | None, Depends(_key_fingerprint)]

__all__ = ["KeyFingerprint", "fingerprint"]
