"""The UI's side of the API keys: when keys are in use, a person types a key once on ``/login``;
it is kept in an HTTP-only, SameSite=Strict cookie, checked by the API's own gate on every page
(a page needs the read scope), and sent with every API call the page's scripts make, which the
route table judges as any other call (see ``orchestrator/server/api/auth.py``). With no keys in
use the UI is open, as the API is."""

import urllib.parse

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import Unauthorized
from orchestrator.schemas.scopes import Scope
from orchestrator.server.api import included
from orchestrator.server.api.auth import UI_KEY_COOKIE
from orchestrator.server.api.errors import framework_answer
from orchestrator.server.ui.render import page

router = included.router(include_in_schema=False)
MAX_KEY = 4096


class LoginFirst(Exception):
    """Raised by ``require_key`` for a page seen without a valid key; answered with a redirect."""

    def __init__(self, path: str) -> None:
        self.path = path


async def browsers_only(request: Request) -> None:
    """A page answers a browser (which asks for ``text/html``); any other client gets the API's
    ``route_not_found``, so one whose ``ORCH_API_URL`` lacks ``/api`` (GET /deployments) is told
    its address is wrong instead of reading a page as JSON."""
    if "text/html" not in request.headers.get("accept", ""):
        raise HTTPException(status_code=404, detail="Not Found")


def no_such_page(request: Request, error: Exception) -> Response:
    """A path no route serves (the app's handler of every 404 the framework makes): a browser's
    mistyped address gets the Not found page; an API client, and any path under ``/api``, keeps the
    API's JSON ``route_not_found``. Nothing is read, so it needs no key."""
    assert isinstance(error, StarletteHTTPException)
    path = request.url.path
    if (request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")
            and path != "/api" and not path.startswith("/api/")):
        return page(request, "not_found.html", status_code=404, what=f"There is no page at {path}.")
    return framework_answer(error)


async def _may_read(request: Request, given: str) -> bool:
    """Whether ``given`` is a valid key that may read (a 429 stays a 429: no login form to guess on)."""
    try:
        principal = await request.app.state.ctx.gate.check(given, request.client.host if request.client else "")
    except Unauthorized:
        return False
    return Scope.READ in principal.scopes and principal.run_id is None


async def require_key(request: Request) -> None:
    if not await request.app.state.ctx.gate.in_use():
        return
    given = request.cookies.get(UI_KEY_COOKIE, "")
    if not given or not await _may_read(request, given):
        raise LoginFirst(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


def login_redirect(_request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginFirst)
    return RedirectResponse("/login?" + urllib.parse.urlencode({"next": error.path}), status_code=303)


def _safe_next(target: str) -> str:
    # Only a path on this server: never an address elsewhere ("//host", "https://...").
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


@router.get("/login")
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return page(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    # A plain urlencoded form, read here so the UI needs no multipart parser.
    form = urllib.parse.parse_qs((await request.body()).decode(errors="replace")[: MAX_KEY * 4])
    given = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    keys = await request.app.state.ctx.gate.in_use()
    if keys and not (given and len(given) <= MAX_KEY and await _may_read(request, given)):
        return page(request, "login.html", status_code=401, next=target, error="That key is not accepted.")
    response = RedirectResponse(target, status_code=303)
    if keys:
        response.set_cookie(UI_KEY_COOKIE, given, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(UI_KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response
