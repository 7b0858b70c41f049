"""``GET /api/broker``: where this server publishes due runs, so workers consume the same broker.

A worker started without ``ORCH_BROKER_URL`` takes the URL from here; every worker compares the
id stored in its broker with the one given here and refuses to start on another broker
(``workers/broker.py``). Open like ``/health``, but the URL's password is shown only when the
server has no keys or the caller sent a valid one.
"""

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from orchestrator import schemas
from orchestrator.errors import ServiceUnavailable
from orchestrator.server.api import included
from orchestrator.server.api.auth import require_api_key
from orchestrator.server.api.context import Ctx
from orchestrator.settings import redacted
from pools.broker import BrokerUnavailable

router = included.router(tags=["broker"])


@router.get("/broker")
async def read_broker(request: Request, ctx: Ctx) -> schemas.BrokerInfo:
    """The server's broker: its URL, whether it is the embedded one, and its identity (503 when
    the server cannot reach it)."""
    keys = await ctx.gate.in_use()
    sent_key = "authorization" in request.headers
    if keys and sent_key:
        await require_api_key(request)  # a wrong key is a 401, as on every other route
    url = ctx.broker.url
    try:
        # Stored again if missing (a flushed Redis), so a worker starting later still finds it.
        identity = await run_in_threadpool(ctx.broker.identity)
    except BrokerUnavailable as error:
        raise ServiceUnavailable(f"the server cannot reach its broker at {redacted(url)}: {error}") from None
    shown = url if not keys or sent_key else redacted(url)
    return schemas.BrokerInfo(url=shown, redacted=shown != url, embedded=url.startswith("sqla+"), identity=identity)
