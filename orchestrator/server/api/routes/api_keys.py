"""API keys, under ``/api/api_keys`` (admin scope): create (the secret is in that answer only),
list, read, revoke (at once, on every replica). docs/security.md."""

from fastapi import Query, Request, Response, status

from orchestrator.schemas.api_keys import ApiKey, ApiKeyCreate, ApiKeyCreated
from orchestrator.server.api import included, paging
from orchestrator.server.api.context import Ctx
from orchestrator.server.services import api_keys

router = included.router(prefix="/api_keys", tags=["api keys"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_api_key(body: ApiKeyCreate, ctx: Ctx) -> ApiKeyCreated:
    with ctx.transaction() as session:
        return api_keys.create(session, body)


@router.get("")
def list_api_keys(ctx: Ctx, request: Request, response: Response,
                  include_run_keys: bool = Query(False, description="Also flow runs' own keys."),
                  cursor: str | None = paging.CURSOR,
                  offset: int = Query(0, ge=0, le=2**63 - 1, description=paging.OFFSET_HELP),
                  limit: int = Query(200, ge=1, le=1000)) -> list[ApiKey]:
    """Keys, oldest first; the ``Link`` header's rel="next" reads on."""
    with ctx.sessions() as session:
        rows, after = api_keys.page(session, include_run_keys=include_run_keys, cursor=cursor, offset=offset,
                                    limit=limit)
        out = [api_keys.to_schema(row) for row in rows]
    paging.link_next(request, response, after)
    return out


@router.get("/{ref}")
def read_api_key(ref: str, ctx: Ctx) -> ApiKey:
    """A key by its id, name or prefix."""
    with ctx.sessions() as session:
        return api_keys.to_schema(api_keys.get(session, ref))


@router.post("/{ref}/revoke")
def revoke_api_key(ref: str, ctx: Ctx) -> ApiKey:
    """Revoke a key: its next request is a 401, on every replica."""
    with ctx.transaction() as session:
        return api_keys.to_schema(api_keys.revoke(session, ref))
