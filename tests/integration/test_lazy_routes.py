"""The route families loaded at their first request (``orchestrator/server/api/lazy.py``) are
invisible: the first request for each, right after the start, answers what an app with every route
loaded answers; the OpenAPI document and ``app.routes`` list every route; and a started server has
not imported them (nor the Redis client: its broker check speaks to Redis itself)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from pools.broker import MemoryBroker

REPO = Path(__file__).resolve().parents[2]
HTML = {"accept": "text/html"}
NO_SUCH = "00000000-0000-4000-8000-000000000000"
# Every lazily loaded family (and paths near theirs): its first request must answer as before.
FIRST_REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/api/automations", {}), ("GET", "/api/automations/", {}), ("PUT", "/api/automations", {}),
    ("GET", "/api/events", {}), ("POST", "/api/events/filter", {}), ("GET", "/api/eventsx", {}),
    ("GET", "/api/api_keys", {}), ("POST", "/api/api_keys/x/revoke", {}),
    ("POST", "/api/hooks/x", {}), ("GET", "/api/hooks/x", {}), ("GET", "/api/webhooks", {}),
    ("GET", "/login", HTML), ("GET", "/pools", HTML), ("GET", "/pools", {}), ("GET", "/api/docs", {}),
    ("GET", "/api/redoc", {}), ("GET", "/favicon.ico", {}), ("GET", "/api", {}), ("GET", "/api/nope", {}),
    ("GET", f"/api/deployments/{NO_SUCH}/schedules", {}), ("POST", f"/api/deployments/{NO_SUCH}/schedules/preview", {}),
    ("POST", f"/api/deployments/{NO_SUCH}/backfill", {}), ("GET", f"/api/deployments/{NO_SUCH}/versions", {}),
    ("GET", "/api/deployments/x/schedules/y", {}), ("GET", "/api/deployments/name/x/schedules", {}),
]
# A deployment's schedules and versions: a family whose paths have a parameter (``{}`` in its prefixes).
DEPLOYMENT_PARTS = ["/api/deployments/{}/schedules", "/api/deployments/{}/backfill", "/api/deployments/{}/versions"]


def _client(app: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient on httpx: a deprecation warning
        from fastapi.testclient import TestClient
    return TestClient(app)


def _answers(app: Any) -> list[tuple[int, str]]:
    with _client(app) as client:
        assert client.get("/api/health").status_code == 200
        return [(r.status_code, r.text) for r in
                (client.request(m, p, headers=h, follow_redirects=False) for m, p, h in FIRST_REQUESTS)]


def test_first_requests_to_lazy_families_answer_as_with_every_route_loaded(tmp_path: Path) -> None:
    from orchestrator.server.api.app import create_app

    def app(name: str) -> Any:
        return create_app(Settings(home=tmp_path / name, database_url=f"sqlite:///{tmp_path / name}.db"),
                          broker=MemoryBroker(), run_services=False)

    lazy, loaded = app("lazy"), app("loaded")
    assert not any(family.loaded for family in lazy.lazy_routes.families)
    loaded.lazy_routes.load_all()
    assert _answers(lazy) == _answers(loaded)
    assert all(family.loaded for family in lazy.lazy_routes.families)


def test_each_path_of_a_family_with_a_path_parameter_loads_it_and_no_other_does(tmp_path: Path) -> None:
    from orchestrator.server.api.app import create_app

    app = create_app(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'o.db'}"), broker=MemoryBroker(),
                     run_services=False)
    family = next(f for f in app.lazy_routes.families if f.prefixes == tuple(DEPLOYMENT_PARTS))
    for prefix in DEPLOYMENT_PARTS:
        for path in (prefix.format(NO_SUCH), prefix.format("x") + "/", prefix.format("x") + "/y/z"):
            assert family.serves(path), path
    for path in ("/api/deployments", f"/api/deployments/{NO_SUCH}", f"/api/deployments/{NO_SUCH}/runs",
                 f"/api/deployments/{NO_SUCH}/schedulesx", "/api/deployments/schedules", "/api/deployments//schedules",
                 f"/x/api/deployments/{NO_SUCH}/versions", f"/api/flow_runs/{NO_SUCH}/versions"):
        assert not family.serves(path), path


def test_openapi_and_routes_list_every_route(tmp_path: Path, sqlite_url: str) -> None:
    from orchestrator.server.api.app import create_app

    def fresh() -> Any:
        return create_app(Settings(home=tmp_path, database_url=sqlite_url), broker=MemoryBroker(), run_services=False)

    with _client(fresh()) as client:  # the document asked for first, before any other request
        document = client.get("/api/openapi.json").json()
    paths = set(document["paths"])
    assert {"/api/automations", "/api/events", "/api/api_keys", "/api/webhooks", "/api/hooks/{slug}",
            "/api/deployments/{deployment_id}/schedules", "/api/deployments/{deployment_id}/versions",
            "/api/work_pools", "/api/flow_runs/{run_id}/claim"} <= paths
    assert fresh().openapi() == document
    routed = {getattr(each, "path", None) for route in fresh().routes
              for each in (route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route])}
    assert paths <= routed and {"/runs", "/login", "/api/docs"} <= routed


# A server's start, up to its first healthy answer (the lifespan: migrations and services), in a
# fresh interpreter: which of the lazily loaded modules it imported.
STARTED = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from fastapi.testclient import TestClient
from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings
from pools import identity

settings = Settings()
app = create_app(settings)
identity.ensure(settings.resolved_broker_url)  # what ``orch server start`` checks before it serves
with TestClient(app) as client:
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/work_pools").status_code == 200
    print(json.dumps(sorted(sys.modules)))
"""
LAZY_MODULES = ["orchestrator.server.api.routes.automations", "orchestrator.server.api.routes.events",
                "orchestrator.server.api.routes.api_keys", "orchestrator.server.api.routes.webhooks",
                "orchestrator.server.api.routes.schedules", "orchestrator.server.api.routes.deployment_versions",
                "orchestrator.server.ui.dashboard", "orchestrator.server.ui.runs", "redis", "celery", "kombu"]


def test_a_started_server_has_not_loaded_the_lazy_families_nor_redis(tmp_path: Path, postgres_url: str,
                                                                     redis_url: str) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "ORCH_HOME": str(tmp_path),
           "ORCH_DATABASE_URL": postgres_url, "ORCH_BROKER_URL": redis_url}
    done = subprocess.run([sys.executable, "-c", STARTED], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert [m for m in LAZY_MODULES if m in modules] == []
