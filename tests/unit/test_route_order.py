"""The create-run route is the first the app tries (FastAPI tries routes in order: in its place it
was the 7th router's 11th route), while the OpenAPI document still shows it once, in its place
among the deployments' routes."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match

from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings


def _api_routes(app: object) -> list[int]:
    """The places of the API's routes in the app's table: its own routes (``included.add_routes``)
    and included routers (the lazy families' places)."""
    return [i for i, route in enumerate(app.router.routes)
            if isinstance(route, APIRoute) or getattr(route, "include_context", None)]


def test_the_create_run_route_is_tried_first_and_documented_in_its_place(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), run_services=False)
    scope = {"type": "http", "method": "POST", "path": f"/api/deployments/{uuid.uuid4()}/runs", "root_path": "",
             "path_params": {}, "app": app}
    full = [i for i, route in enumerate(app.router.routes) if route.matches(dict(scope))[0] == Match.FULL]
    api_routes = _api_routes(app)
    assert full and full[0] == api_routes[0]

    paths = list(app.openapi()["paths"])
    place = paths.index("/api/deployments/{deployment_id}/runs")
    assert paths[place - 1].startswith("/api/deployments/") and paths[0] != paths[place]
    operations = [op["operationId"] for path in app.openapi()["paths"].values() for op in path.values()]
    assert len(operations) == len(set(operations))


@pytest.mark.parametrize("path", ["claim", "state", "heartbeat", "infrastructure"])
def test_the_run_path_routes_are_tried_right_after_it_and_documented_in_their_place(tmp_path: Path, path: str) -> None:
    """A run's claim, its state reports, heartbeats and infrastructure report: the routes every run
    passes through, right after the create-run route, each once in the OpenAPI document."""
    app = create_app(Settings(home=tmp_path), run_services=False)
    scope = {"type": "http", "method": "POST", "path": f"/api/flow_runs/{uuid.uuid4()}/{path}", "root_path": "",
             "path_params": {}, "app": app}
    full = [i for i, route in enumerate(app.router.routes) if route.matches(dict(scope))[0] == Match.FULL]
    api_routes = _api_routes(app)
    assert full and full[0] in api_routes[1:5]

    document = app.openapi()["paths"]
    assert "post" in document[f"/api/flow_runs/{{run_id}}/{path}"]
    operations = [op["operationId"] for item in document.values() for op in item.values()]
    assert len(operations) == len(set(operations))


def test_every_documented_route_of_the_eager_routers_is_one_of_the_apps_own_routes(tmp_path: Path) -> None:
    """The routers every server serves have their routes in the app's own table (``included.add_routes``;
    an included router's routes cost a request ~4x as much to try): a request for any operation of the
    OpenAPI document is matched by the documented route itself, behind ``authorize`` -- or, for a lazy
    family's path (``api/lazy.py``), by the included router that is its place."""
    from orchestrator.server.api.scopes import authorize

    app = create_app(Settings(home=tmp_path), run_services=False)
    document = app.openapi()["paths"]  # loads the lazy families into their places
    own = lazy = 0
    for path, operations in document.items():
        filled = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        in_family = any(family.serves(filled) for family in app.lazy_routes.families)
        for method, operation in operations.items():
            scope = {"type": "http", "method": method.upper(), "path": filled, "root_path": "", "path_params": {},
                     "app": app}
            entry = next(route for route in app.router.routes if route.matches(dict(scope))[0] == Match.FULL)
            if in_family:
                assert getattr(entry, "include_context", None) is not None, (method, path)
                lazy += 1
                continue
            assert isinstance(entry, APIRoute), (method, path, entry)
            assert (entry.path, entry.unique_id) == (path, operation["operationId"])
            assert entry.dependencies[0].dependency is authorize, (method, path)
            own += 1
    assert own > 40 and lazy > 20


@pytest.mark.parametrize("path", ["flow_runs/{run}/logs", "flow_runs/{run}/task_runs", "task_runs",
                                  "task_runs/holders/{run}/heartbeat", "work_pools/pool/workers/heartbeat"])
def test_the_routes_every_run_or_worker_calls_are_tried_next_and_documented_in_their_place(
        tmp_path: Path, path: str) -> None:
    """A run's log batches and task runs, a program's task runs and lease heartbeats, a worker's
    heartbeats: right after the run path's routes (``included.again``), each once in the document."""
    app = create_app(Settings(home=tmp_path), run_services=False)
    scope = {"type": "http", "method": "POST", "path": "/api/" + path.format(run=uuid.uuid4()), "root_path": "",
             "path_params": {}, "app": app}
    full = [i for i, route in enumerate(app.router.routes) if route.matches(dict(scope))[0] == Match.FULL]
    assert full and full[0] in _api_routes(app)[5:10]
    assert not app.router.routes[full[0]].include_in_schema and app.router.routes[full[-1]].include_in_schema

    documented = "/api/" + path.replace("{run}", "{run_id}" if path.startswith("flow") else "{holder_id}")
    assert "post" in app.openapi()["paths"][documented.replace("/pool/", "/{name}/")]
