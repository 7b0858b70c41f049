"""The API client used by the SDK, the CLI, workers and flow-run processes.

``transport.py`` is the HTTP side (a keep-alive connection per thread, retries through an outage,
error answers raised as the very class the server raised; a server that cannot be reached raises
``ServerUnreachable`` naming the URL); ``calls.py`` is ``Client``, one typed call per route (events, automations and webhooks in ``event_calls.py``).
Standard library only at import: a flow-run process starts fast.
"""

from __future__ import annotations

from orchestrator.client.calls import Client
from orchestrator.errors import NotTheApi, ServiceUnavailable

__all__ = ["Client", "NotTheApi", "ServiceUnavailable"]
