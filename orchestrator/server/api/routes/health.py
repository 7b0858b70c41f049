from sqlalchemy import text

from orchestrator.server.api import included
from orchestrator.server.api.context import Ctx

router = included.router(tags=["health"])


@router.get("/health")
def health(ctx: Ctx) -> dict[str, str]:
    """200 when the API and its database answer (503 otherwise, via the error handlers)."""
    with ctx.sessions() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}
