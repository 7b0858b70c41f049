"""The API's and the UI's routes are built once, where they are served (``api/included.py``): FastAPI
built each route at its module's declaration and again for its router's inclusion, and used only the
second. Nothing of it shows: the OpenAPI document is the one plain ``APIRoute``s give, and a route of
``included.router`` used on its own is built in full and answers as an ``APIRoute``."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from pydantic import BaseModel

from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings


def TestClient(app: FastAPI) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient on httpx: a deprecation warning
        from fastapi.testclient import TestClient
    return TestClient(app)


def _routers() -> list[object]:
    """Every router of the API's and the UI's modules, found by walking their packages: a page or a
    route module added later is covered without being listed here."""
    import importlib
    import pkgutil

    from fastapi import APIRouter

    from orchestrator.server import ui
    from orchestrator.server.api import routes

    modules = [importlib.import_module(f"{package.__name__}.{info.name}")
               for package in (routes, ui) for info in pkgutil.iter_modules(package.__path__)]
    found = [value for module in modules for value in vars(module).values() if isinstance(value, APIRouter)]
    assert len(found) >= 24
    return found


def test_the_routers_routes_are_not_built_at_their_declaration_nor_by_the_served_app(tmp_path: Path) -> None:
    """After requests through every eager router and the OpenAPI document (which loads the lazy
    families), no route of a module's router has built a dependant of its own: each route's only
    build is its inclusion's."""
    app = create_app(Settings(home=tmp_path), run_services=False)
    with TestClient(app) as client:
        assert client.get("/api/work_pools").status_code in (200, 503)  # walks every eager router
        document = client.get("/api/openapi.json").json()
        assert client.get("/api/work_pools/nope").status_code in (404, 503)
    assert "/api/work_pools" in document["paths"] and "/api/automations" in document["paths"]
    declared = [route for router in _routers() for route in router.routes]
    assert len(declared) > 80
    built = [route.path for route in declared if "dependant" in vars(route)]
    assert built == []


_DOCUMENT = """
import json, sys
from fastapi import APIRouter
from orchestrator.server.api import included
if sys.argv[1] == "plain":
    included.router = lambda **options: APIRouter(**options)
from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings
app = create_app(Settings(home=sys.argv[2]), run_services=False)
sys.stdout.write(json.dumps(app.openapi()))
"""


def test_the_openapi_document_is_the_one_plain_routes_give(tmp_path: Path) -> None:
    def document(kind: str) -> str:
        return subprocess.run([sys.executable, "-c", _DOCUMENT, kind, str(tmp_path / kind)], check=True,
                              capture_output=True, text=True, timeout=120).stdout

    plain, ours = document("plain"), document("included")
    assert json.loads(ours)["paths"]
    assert ours == plain


class Item(BaseModel):
    name: str
    size: int = 1


def test_a_route_used_on_its_own_is_built_in_full_and_answers_as_an_api_route() -> None:
    from orchestrator.server.api import included

    router = included.router(prefix="/items", tags=["items"])

    @router.post("/{item_id}", status_code=201)
    def put_item(item_id: uuid.UUID, item: Item, limit: int = Query(10, ge=1)) -> Item:
        """Store an item."""
        return Item(name=f"{item.name}:{limit}", size=item.size)

    (route,) = router.routes
    assert isinstance(route, included.IncludedRoute) and "dependant" not in vars(route)
    alone, through = FastAPI(), FastAPI()
    alone.router.routes.append(route)  # served as it is: FastAPI asks it for its regex, handler ...
    through.include_router(router)
    for app in (through, alone):
        with TestClient(app) as client:
            good = client.post(f"/items/{uuid.uuid4()}?limit=3", json={"name": "a"})
            assert (good.status_code, good.json()) == (201, {"name": "a:3", "size": 1})
            bad = client.post("/items/nope?limit=0", json={"size": "x"})
            assert bad.status_code == 422
            assert {tuple(error["loc"]) for error in bad.json()["detail"]} == {
                ("path", "item_id"), ("query", "limit"), ("body", "name"), ("body", "size")}
    assert "dependant" in vars(route)
    assert alone.openapi()["paths"] == through.openapi()["paths"]
    assert alone.openapi()["paths"]["/items/{item_id}"]["post"]["description"] == "Store an item."


def test_threads_asking_an_unbuilt_route_at_once_all_get_the_one_build() -> None:
    import threading

    from orchestrator.server.api import included

    router = included.router(prefix="/items")

    @router.get("/{item_id}")
    def get_item(item_id: uuid.UUID) -> Item:
        return Item(name=str(item_id))

    (route,) = router.routes
    start, seen, failed = threading.Barrier(8), [], []

    def ask() -> None:
        start.wait()
        try:
            seen.append(route.dependant)
        except AttributeError as error:
            failed.append(error)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert len(seen) == 8 and all(dependant is seen[0] for dependant in seen)
    assert [param.name for param in seen[0].path_params] == ["item_id"]
