"""The fast way's table (``api/fast_routes.ROUTES``) says of each route what the app's own route says:
its name, method, path, path parameter and endpoint. A route renamed, moved or given another endpoint
breaks this test, not the fast way's answers."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from fastapi.routing import APIRoute

from orchestrator.server.api.app import create_app
from orchestrator.server.api.fast_routes import ROUTES
from orchestrator.settings import Settings


def test_each_fast_route_is_the_apps_route_of_its_name(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), run_services=False)
    for fast in ROUTES:
        # the first route of the name: the one FastAPI tries first (the run path's come first)
        route = next(r for r in app.routes if isinstance(r, APIRoute) and r.name == fast.name)
        assert route.methods == {"POST"} and route.endpoint is fast.endpoint, fast.name
        run_id = str(uuid.uuid4())
        assert re.findall(r"\{(\w+)\}", route.path) == [fast.param], fast.name
        assert fast.path.fullmatch(route.path.replace("{" + fast.param + "}", run_id)), fast.name
        assert fast.need is not None
