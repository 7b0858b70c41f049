"""The web UI: server-rendered pages (Jinja2) at ``/``, their CSS and script at ``/ui/static``, and
the API's docs pages from bundled assets. Pages read through the API's services; every action is a
call of the API's own routes from the page's script (docs/ui.md)."""

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from orchestrator.server.ui import access
from orchestrator.server.ui.render import STATIC


def install_ui(app: FastAPI, pages: APIRouter) -> None:
    """Mount the UI on ``app`` (whose ``state.ctx`` is the API's context); its pages go into
    ``pages`` (an empty router ``app`` includes here) when ``include_pages`` is called."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(access.LoginFirst, access.login_redirect)
    app.add_exception_handler(404, access.no_such_page)  # before the API's JSON for a browser's typo
    app.include_router(pages)


def include_pages(pages: APIRouter) -> None:
    """The pages' routes, into ``pages`` (``api/lazy.py``: at the first request for one)."""
    from orchestrator.server.api.auth import require_api_key
    from orchestrator.server.ui import (
        apidocs,
        automations,
        dashboard,
        deployments,
        events,
        pools,
        runs,
        task_runs,
    )

    pages.include_router(access.router)
    pages.include_router(apidocs.router)  # the docs are open, like the OpenAPI document they show
    protected = [Depends(access.browsers_only), Depends(access.require_key)]
    for module in (dashboard, deployments, runs, task_runs, pools, events, automations):
        pages.include_router(module.router, dependencies=protected)
    # Not a page: the automations page's YAML reader, answered to the page's script.
    pages.include_router(automations.yaml_router, dependencies=[Depends(require_api_key)])


__all__ = ["include_pages", "install_ui"]
