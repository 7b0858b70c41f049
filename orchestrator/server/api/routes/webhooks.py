"""Incoming webhooks: ``/api/webhooks`` to manage them (API key), ``POST /api/hooks/{slug}`` for
the outside world (the hook's own secret instead of an API key)."""

import json
import urllib.parse

from fastapi import Request, status
from starlette.concurrency import run_in_threadpool

from orchestrator.server.api import included
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import webhooks

router = included.router(prefix="/webhooks", tags=["webhooks"])
hooks = included.router(tags=["webhooks"])
MAX_BODY = 1_000_000
SECRET_HEADER = "x-orch-webhook-secret"


@router.post("", status_code=status.HTTP_201_CREATED)
def create_webhook(body: webhooks.WebhookCreate, ctx: Ctx) -> webhooks.WebhookCreated:
    with ctx.transaction() as session:
        return webhooks.create(session, body)


@router.get("")
def list_webhooks(ctx: Ctx) -> list[webhooks.Webhook]:
    with ctx.sessions() as session:
        return [webhooks.to_schema(row) for row in webhooks.list_(session)]


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(ref: str, ctx: Ctx) -> None:
    with ctx.transaction() as session:
        webhooks.delete(session, ref)


def _body(raw: bytes, content_type: str) -> object:
    text = raw[:MAX_BODY].decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            return text
    if "application/x-www-form-urlencoded" in content_type:
        return dict(urllib.parse.parse_qsl(text))
    return text


@hooks.post("/hooks/{slug}", status_code=status.HTTP_202_ACCEPTED)
async def receive_hook(slug: str, request: Request, ctx: Ctx) -> dict[str, str]:
    """Turn this call (body, headers, query) into an event through the hook's template. 401 for a
    wrong secret, 422 when the template fails or does not make an event."""
    raw = await request.body()
    query = {k: v for k, v in request.query_params.items() if k != "secret"}
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in (SECRET_HEADER, "authorization")}
    call = webhooks.Call(body=_body(raw, request.headers.get("content-type", "")), headers=headers, query=query)
    secret = request.headers.get(SECRET_HEADER) or request.query_params.get("secret")

    def record() -> str:
        with ctx.transaction() as session:
            return str(webhooks.receive(session, slug, secret, call).id)

    return {"event_id": await run_in_threadpool(record)}
