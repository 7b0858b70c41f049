"""API keys with scopes (docs/security.md), against a live server on SQLite and PostgreSQL: the
route table walked route x scope, hashing, expiry, revocation on every replica, a run's own key,
/metrics, failed authentications counted and rate-limited."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import schemas
from orchestrator.errors import Conflict, Forbidden, RateLimited, Unauthorized
from orchestrator.schemas.api_keys import ApiKeyCreate, Scope, granted
from orchestrator.server.api.scopes import ROUTES, Need
from orchestrator.server.db import models as m
from orchestrator.settings import Settings
from orchestrator.states import StateType
from pools.broker import MemoryBroker
from tests.conftest import LiveServer, live_server
from tests.harness import wait_until

BOOT = "bootstrap-admin-key-0123456789"


def keyed(tmp_path: Path, database_url: str, **more: Any) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api",
                    server_api_keys=BOOT, **more)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(keyed(tmp_path, database_url), broker=MemoryBroker()) as live:
        yield live


def new_key(server: LiveServer, *scopes: Scope, pools: list[str] | None = None, **more: Any) -> str:
    created = server.client(api_key=BOOT).create_api_key(
        ApiKeyCreate(name=f"k-{uuid.uuid4().hex[:8]}", scopes=list(scopes), pools=pools, **more))
    return created.secret


def deployment_and_run(server: LiveServer, pool: str = "local") -> tuple[schemas.Deployment, schemas.FlowRun]:
    admin = server.client(api_key=BOOT)
    with contextlib.suppress(Conflict):  # there already
        admin.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    deployment = admin.upsert_deployment(schemas.DeploymentCreate(
        flow_name=f"f-{uuid.uuid4().hex[:6]}", name="d", entrypoint="flows.py:f", work_pool_name=pool))
    return deployment, admin.create_flow_run(deployment.id, schemas.FlowRunCreate())


def call(server: LiveServer, method: str, path: str, key: str | None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """One request (the answer's headers only for a stream: it is not read to its end)."""
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key:
            sent["Authorization"] = f"Bearer {key}"
        connection.request(method, path, None if body is None else json.dumps(body), sent)
        response = connection.getresponse()
        got = dict(response.getheaders())
        if response.getheader("content-type", "").startswith("text/event-stream"):
            return response.status, None, got
        data = response.read()
        is_json = response.getheader("content-type", "").startswith("application/json")
        return response.status, json.loads(data) if data and is_json else data.decode(), got
    finally:
        connection.close()


# --- the table ---------------------------------------------------------------------------------


def api_routes(app: Any) -> list[tuple[str, str, str]]:
    """(method, path, name) of every API route of the app: under /api (but the docs, which are
    the UI's pages, and the OpenAPI document) and /metrics."""
    found = []
    for route in app.routes:
        for each in (route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]):
            path = getattr(each, "path", "")
            if not (path.startswith("/api/") or path == "/metrics") or each.name in ("openapi", "swagger", "redoc"):
                continue
            found += [(method, path, each.name) for method in sorted(each.methods) if method != "HEAD"]
    return found


def test_every_api_route_has_one_declared_scope(tmp_path: Path, sqlite_url: str) -> None:
    from orchestrator.server.api.app import create_app

    app = create_app(keyed(tmp_path, sqlite_url), broker=MemoryBroker(), run_services=False)
    routes = set(api_routes(app))  # one route twice in the table (the create-run route, also first) is one
    names = [name for _, _, name in routes]
    assert len(routes) > 50
    assert len(names) == len(set(names)), "route names must be unique: the table is keyed by them"
    assert sorted(set(names) - set(ROUTES)) == [], "routes without a scope in server/api/scopes.py"
    assert sorted(set(ROUTES) - set(names)) == [], "scopes of routes that do not exist"


def filled(path: str, ids: dict[str, str]) -> str:
    for param, value in ids.items():
        path = path.replace("{" + param + "}", value)
    return path + ("?timeout=0" if path.endswith(("/wait", "/cancellations")) else "")


def test_every_route_by_every_scope(database_url: str, tmp_path: Path) -> None:
    """Each API route, called with a run's own key, no key, and a key of each scope: 401 without,
    403 naming the needed scope when the key lacks it, never 401/403 when it has it (the call then
    fails or succeeds on its own merits: most get a 404 or 422 here)."""
    settings = keyed(tmp_path, database_url, server_auth_failures_per_minute=100_000)
    with live_server(settings, broker=MemoryBroker()) as server:
        deployment, run = deployment_and_run(server)
        run_key = server.client(api_key=BOOT).claim_flow_run(run.id, "w", "local").api_key
        ids = {"run_id": str(run.id), "deployment_id": str(deployment.id), "name": "local", "queue": "default",
               "worker_name": "w", "schedule": "nope", "automation_id": str(uuid.uuid4()), "ref": "nope",
               "flow_name": "f", "deployment_name": "d"}
        routes = [r for r in api_routes(server.app) if ROUTES[r[2]].scope is not None and r[2] != "read_broker"]

        def walk(key: str | None, allowed: Callable[[Need], bool]) -> None:
            for method, path, name in routes:
                body = [] if name in ("write_events", "write_logs", "write_task_runs") else {}
                status, answer, _ = call(server, method, filled(path, ids), key, body)
                need = ROUTES[name]
                if key is None:
                    assert status == 401, (name, status, answer)
                elif allowed(need):
                    assert status not in (401, 403), (name, key, status, answer)
                else:
                    assert status == 403 and answer["code"] == "forbidden", (name, key, status, answer)
                    assert f"'{need.scope}' scope" in answer["detail"], answer

        walk(run_key, lambda need: need.own_run)  # first: the others' calls may delete its run
        walk(None, lambda need: False)
        for scope in Scope:
            walk(new_key(server, scope), lambda need, scope=scope: need.scope in granted([scope]))


# --- keys --------------------------------------------------------------------------------------


def test_the_key_is_shown_once_and_stored_as_its_hash(server: LiveServer) -> None:
    admin = server.client(api_key=BOOT)
    created = admin.create_api_key(ApiKeyCreate(name="ci", scopes=[Scope.READ]))
    assert created.secret.startswith(f"orch_{created.prefix}_") and len(created.secret) > 50
    assert server.client(api_key=created.secret).list_work_pools() == []
    listed = call(server, "GET", "/api/api_keys", BOOT)[1]
    assert [k["name"] for k in listed] == ["ci"] and created.secret not in json.dumps(listed)
    with server.ctx.sessions() as session:
        row = session.scalar(select(m.ApiKey).where(m.ApiKey.name == "ci"))
        stored = json.dumps([str(getattr(row, c.name)) for c in m.ApiKey.__table__.columns])
    assert created.secret not in stored and created.secret.split("_")[-1] not in stored
    import hashlib
    assert row.hash == hashlib.sha256(created.secret.encode()).hexdigest()
    with pytest.raises(Unauthorized, match="invalid API key"):  # one character off
        server.client(api_key=created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B")).list_work_pools()


def test_bad_key_requests_are_422_naming_the_field(server: LiveServer) -> None:
    for body, field in (({"name": "x", "scopes": []}, "scopes"), ({"name": "x", "scopes": ["root"]}, "scopes"),
                        ({"name": "x", "scopes": ["read"], "pools": ["a"]}, "pools"),
                        ({"name": "x", "scopes": ["read"], "expires_in": "-5"}, "expires_in")):
        status, answer, _ = call(server, "POST", "/api/api_keys", BOOT, body)
        assert status == 422 and field in json.dumps(answer), (body, answer)
    call(server, "POST", "/api/api_keys", BOOT, {"name": "dup", "scopes": ["read"]})
    status, answer, _ = call(server, "POST", "/api/api_keys", BOOT, {"name": "dup", "scopes": ["read"]})
    assert status == 409 and "dup" in answer["detail"]


def test_an_expired_key_is_refused(server: LiveServer) -> None:
    key = new_key(server, Scope.READ, expires_in="1s")
    client = server.client(api_key=key)

    def refused() -> bool:
        try:
            client.list_work_pools()
        except Unauthorized as error:
            return "expired" in str(error)
        return False

    wait_until("the key to expire", refused, 10, 0.1)


def test_a_revoked_key_is_refused_at_once_by_every_replica(postgres_url: str, tmp_path: Path) -> None:
    """Two servers on one database: B has the key cached; A revokes it; B refuses it well within
    B's cache lifetime (30 s), because the revocation reached B through the hub."""
    with live_server(keyed(tmp_path / "a", postgres_url), broker=MemoryBroker()) as a, \
            live_server(keyed(tmp_path / "b", postgres_url), broker=MemoryBroker()) as b:
        key = new_key(a, Scope.READ)
        on_b = b.client(api_key=key)
        assert on_b.list_work_pools() == []  # cached on B now
        a.client(api_key=BOOT).revoke_api_key(key.split("_")[1])

        def refused() -> bool:
            try:
                on_b.list_work_pools()
            except Unauthorized as error:
                return "revoked" in str(error)
            return False

        wait_until("B to refuse the revoked key", refused, 3, 0.02)
        assert b.ctx.gate.failures_total["revoked"] >= 1


def test_a_server_without_keys_is_open_until_the_first_key(database_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker()) as server:
        anyone = server.client()
        assert anyone.list_work_pools() == []
        created = anyone.create_api_key(ApiKeyCreate(name="first", scopes=[Scope.ADMIN]))
        with pytest.raises(Unauthorized, match="missing API key"):
            anyone.list_work_pools()
        admin = server.client(api_key=created.secret)
        admin.revoke_api_key("first")
        with pytest.raises(Unauthorized):  # revoking the last key does not open the server again
            anyone.list_work_pools()


def test_a_worker_key_limited_to_pools(server: LiveServer) -> None:
    deployment_and_run(server, pool="local")
    _, run = deployment_and_run(server, pool="other")
    key = new_key(server, Scope.WORKER, pools=["local"])
    worker = server.client(api_key=key)
    worker.heartbeat("local", "w")
    with pytest.raises(Forbidden, match="serves the pools local, not 'other'"):
        worker.heartbeat("other", "w")
    with pytest.raises(Forbidden, match="not 'other'"):
        worker.claim_flow_run(run.id, "w")
    assert worker.read_flow_run(run.id).id == run.id  # reading is not limited


# --- a run's own key ----------------------------------------------------------------------------


def test_a_runs_own_key_reaches_its_run_only(server: LiveServer) -> None:
    deployment, run = deployment_and_run(server)
    _, other = deployment_and_run(server)
    worker = server.client(api_key=new_key(server, Scope.WORKER))
    claim = worker.claim_flow_run(run.id, "w", "local")
    assert claim.api_key and claim.api_key.startswith("orch_")
    own = server.client(api_key=claim.api_key)
    # what a flow-run process does
    assert own.read_flow_run(run.id).id == run.id
    assert own.read_deployment(deployment.id).id == deployment.id
    own.set_flow_run_running(run.id, worker_name="w")
    own.flow_run_heartbeat(run.id)
    own.write_logs(run.id, [{"level": 20, "message": "hello", "timestamp": "2024-01-01T00:00:00Z"}])
    own.write_task_runs(run.id, [])
    own.emit_events([])
    # and nothing else
    for attempt in (lambda: own.read_flow_run(other.id), lambda: own.cancel_flow_run(other.id),
                    lambda: own.cancel_flow_run(run.id), lambda: own.set_flow_run_state(other.id, StateType.RUNNING),
                    lambda: own.create_flow_run(deployment.id, schemas.FlowRunCreate()),
                    lambda: own.read_deployment(uuid.uuid4()), lambda: own.list_flow_runs(),
                    lambda: own.list_work_pools(), lambda: own.claim_flow_run(other.id, "w", "local")):
        with pytest.raises(Forbidden, match="its own run"):
            attempt()
    own.set_flow_run_state(run.id, StateType.COMPLETED)
    assert own.read_flow_run(run.id).state.type == StateType.COMPLETED  # within the grace after the end
    listed = server.client(api_key=BOOT).list_api_keys(include_run_keys=True)
    assert [k.run_id for k in listed if k.run_id] == [run.id]
    assert [k for k in server.client(api_key=BOOT).list_api_keys() if k.run_id] == []


def test_a_runs_key_stops_working_after_its_run_ends(database_url: str, tmp_path: Path) -> None:
    # A short cache life (the hub's re-read) instead of waiting out the default.
    settings = keyed(tmp_path, database_url, run_key_grace_seconds=0, hub_reread_seconds=0.5)
    with live_server(settings, broker=MemoryBroker()) as server:
        _, run = deployment_and_run(server)
        claim = server.client(api_key=BOOT).claim_flow_run(run.id, "w", "local")
        own = server.client(api_key=claim.api_key)
        own.set_flow_run_running(run.id, worker_name="w")
        server.client(api_key=BOOT).set_flow_run_state(run.id, StateType.COMPLETED)

        def refused() -> bool:
            try:
                own.read_flow_run(run.id)
            except Unauthorized as error:
                return "expired" in str(error)
            return False

        wait_until("the run's key to expire", refused, 5, 0.05)


def test_an_open_server_issues_no_run_keys(api: LiveServer) -> None:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="local", type="process"))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="x.py:f",
                                                                   work_pool_name="local"))
    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    assert client.claim_flow_run(run.id, "w", "local").api_key is None
    assert client.list_work_pools()  # still open: no key row was made


# --- /metrics and failures ---------------------------------------------------------------------


def test_metrics_need_the_read_scope_unless_opened(database_url: str, tmp_path: Path) -> None:
    with live_server(keyed(tmp_path / "a", database_url), broker=MemoryBroker()) as server:
        assert call(server, "GET", "/metrics", None)[0] == 401
        assert call(server, "GET", "/metrics", new_key(server, Scope.READ))[0] == 200
    with live_server(keyed(tmp_path / "b", database_url, metrics_open=True), broker=MemoryBroker()) as server:
        assert call(server, "GET", "/metrics", None)[0] == 200


def test_failed_authentications_are_counted_and_rate_limited(database_url: str, tmp_path: Path) -> None:
    settings = keyed(tmp_path, database_url, server_auth_failures_per_minute=3)
    with live_server(settings, broker=MemoryBroker()) as server:
        good = new_key(server, Scope.READ)
        assert call(server, "GET", "/api/work_pools", None)[0] == 401
        assert call(server, "GET", "/api/work_pools", "orch_000000000000_" + "x" * 43)[0] == 401
        assert call(server, "GET", "/api/work_pools", "nope")[0] == 401
        status, answer, headers = call(server, "GET", "/api/work_pools", good)  # even a good key now
        assert status == 429 and answer["code"] == "rate_limited"
        assert 1 <= int(headers["retry-after"]) <= 60
        with pytest.raises(RateLimited):
            server.client(api_key=good).list_work_pools()
        server.ctx.gate._failures.clear()  # a minute later (the window is the gate's own)
        metrics = call(server, "GET", "/metrics", good)[1]
        assert 'orch_auth_failures_total{reason="missing"} 1.0' in metrics
        assert 'orch_auth_failures_total{reason="invalid"} 2.0' in metrics
        assert 'orch_auth_failures_total{reason="rate_limited"} 2.0' in metrics
