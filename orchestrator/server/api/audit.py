"""Who made a change, for the deployment history: a fingerprint of the caller's API key (never the
key itself), or None when the server is open (``ORCH_SERVER_API_KEYS`` unset)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Request

from orchestrator.server.api.auth import presented_key


def fingerprint(key: str) -> str:
    """``sha256:`` and the first 16 hex digits of the key's SHA-256: tells keys apart in the
    history without storing anything that would let one be used."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


async def _key_fingerprint(request: Request) -> str | None:
    # async: a plain ``def`` dependency would cost a thread-pool hop. The key was checked already
    # (``require_api_key``); this only says which one it was.
    if not request.app.state.ctx.settings.accepted_api_keys:
        return None
    given = presented_key(request)
    return fingerprint(given) if given else None


KeyFingerprint = Annotated[str | None, Depends(_key_fingerprint)]
