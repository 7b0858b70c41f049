"""``/api/docs`` (Swagger UI) and ``/api/redoc`` from the copies in ``static/vendor``: they work on
a machine with no internet, where FastAPI's defaults load their scripts from a CDN."""

from fastapi import Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from orchestrator.server.api import included

router = included.router(include_in_schema=False)
VENDOR = "/ui/static/vendor"
# Nothing from elsewhere, even what the bundles ask for themselves (Redoc's footer loads its logo
# from a CDN): the browser refuses it without sending a request. Both pages start from an inline
# script or style, and Redoc runs its search in a blob: worker.
DOCS_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'")


def _offline(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_POLICY
    return response


@router.get("/api/docs")
def swagger(request: Request) -> HTMLResponse:
    return _offline(get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} — API",
        swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/ui/static/favicon.svg"))


@router.get("/api/redoc")
def redoc(request: Request) -> HTMLResponse:
    return _offline(get_redoc_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} — API",
        redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js", redoc_favicon_url="/ui/static/favicon.svg",
        with_google_fonts=False))
