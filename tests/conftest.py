"""Shared fixtures. Real services only: PostgreSQL and Redis on 127.0.0.1. A fixture whose service
is missing skips the test locally and fails it when ``CI`` is set, so CI never silently skips."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port, wait_until

PG_ADMIN_URL = os.environ.get("ORCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _redis_url_of_this_worker(base: str) -> str:
    """The suite runs on several pytest-xdist workers (pyproject's ``-n``): each flushes its own Redis
    database, the base one plus the worker's number (``gw0``: the base; a run without xdist: the base)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    prefix, _, db = base.rpartition("/")
    return f"{prefix}/{int(db or 0) + int(worker.removeprefix('gw'))}"


REDIS_URL = _redis_url_of_this_worker(os.environ.get("ORCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"))
# Tests that share one costly session resource (an image, a cluster of their own, a browser) or that
# kill processes run on one worker, each kind in its own group; the rest is spread over the workers.
_GROUPS = {"deploy": "deploy", "faults": "faults", "ui": "ui"}
_FIXTURE_GROUPS = {"kube_admin": "kubernetes", "container_venv": "docker", "docker_client": "docker"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        parts = Path(str(item.path)).relative_to(tests_dir).parts
        group = _GROUPS.get(parts[0]) if len(parts) > 1 else None
        if group is None:
            fixtures = set(getattr(item, "fixturenames", ()))
            group = next((g for f, g in _FIXTURE_GROUPS.items() if f in fixtures), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def missing_service(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI but is not available")
    pytest.skip(f"{what} not available")


def docker_engine(timeout: int) -> Any:
    """A client of the Docker engine ``DOCKER_HOST`` names (or the default socket), or a skip saying
    there is none. The address is probed with a plain socket first: docker-py leaves the socket of a
    failed connection open, which pytest's warnings-as-errors would report at exit."""
    import docker

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not _reachable(host):
        missing_service(f"a Docker engine at {host} (the Docker tests need one; set DOCKER_HOST to use another)")
    client = docker.from_env(timeout=timeout)
    try:
        client.ping()
    except docker.errors.DockerException as error:
        client.close()
        missing_service(f"a Docker engine at {host} ({error})")
    return client


def _reachable(address: str) -> bool:
    scheme, _, rest = address.partition("://")
    try:
        if scheme == "unix":
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(rest)
        else:
            host, _, port = rest.split("/", 1)[0].rpartition(":")
            with socket.create_connection((host, int(port or 2375)), timeout=5):
                pass
    except (OSError, ValueError):
        return False
    return True


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001
        engine.dispose()
        missing_service(f"PostgreSQL at {PG_ADMIN_URL} ({type(error).__name__}; set ORCH_TEST_PG_URL to use another)")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_admin: Any) -> Iterator[str]:
    """A migrated database that each test's database is copied from."""
    from sqlalchemy import text

    from orchestrator.server.db.session import make_engine, migrate

    name = f"orch_tmpl_{os.getpid()}"
    with pg_admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_pg_url(name))
    migrate(engine)
    engine.dispose()
    yield name
    with pg_admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


@contextlib.contextmanager
def fresh_database(pg_admin: Any, template: str | None = None) -> Iterator[str]:
    """A database of its own for one test (a copy of ``template``, else empty), dropped after it."""
    from sqlalchemy import text

    name = f"orch_t_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    yield _pg_url(name)
    with pg_admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(pg_admin: Any, pg_template: str) -> Iterator[str]:
    """A PostgreSQL database at the newest migration."""
    with fresh_database(pg_admin, pg_template) as url:
        yield url


@pytest.fixture
def empty_postgres(pg_admin: Any) -> Iterator[str]:
    """A PostgreSQL database with no tables (for migration and first-start tests)."""
    with fresh_database(pg_admin) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orchestrator.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def sessions(database_url: str) -> Iterator[Any]:
    from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate

    engine = make_engine(database_url)
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


# --- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as error:
        missing_service(f"Redis at {REDIS_URL} ({type(error).__name__}; set ORCH_TEST_REDIS_URL to use another)")
    finally:
        client.close()
    return REDIS_URL


# --- a live API server in this process ---------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    app: Any
    broker: Any
    clients: list[Any] = field(default_factory=list)

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    def client(self, **kwargs: Any) -> Any:
        from orchestrator.client import Client

        client = Client(self.url, **kwargs)
        self.clients.append(client)  # closed when the server stops (no leaked sockets)
        return client

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Status code and JSON of one request, for tests about status codes."""
        import http.client
        import json
        import urllib.parse

        url = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            connection.request(method, url.path + path if path.startswith("/") and not path.startswith("/metrics")
                               else path, payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data and response.getheader("content-type", "")
                                     .startswith("application/json") else data.decode())
        finally:
            connection.close()


@contextlib.contextmanager
def live_server(settings: Any, broker: Any = None, run_services: bool = True) -> Iterator[LiveServer]:
    import uvicorn

    from orchestrator.server.api.app import create_app

    app = create_app(settings, broker=broker, run_services=run_services)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def alive() -> None:
        if not thread.is_alive():
            raise RuntimeError("test API server exited while starting")

    wait_until("the test API server to start", lambda: server.started, 20, 0.01, alive=alive)
    live = LiveServer(url=f"http://127.0.0.1:{port}/api", app=app, broker=app.state.ctx.broker)
    try:
        yield live
    finally:
        for client in live.clients:
            client.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A live API on the parametrized database, with the in-memory broker twin."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker()) as server:
        yield server


@pytest.fixture
def fast_api(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A live server whose reaper finds a silent holder within about 1.5 s (heartbeats every 0.5 s,
    silence is three of them; a pass every 0.2 s), on an in-memory broker: for tests that kill a
    real program and wait for its runs to be ended."""
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path / "home", database_url=database_url, api_url="http://unused/api",
                        worker_heartbeat_seconds=0.5, reaper_interval_seconds=0.2)
    with live_server(settings, broker=MemoryBroker()) as server:
        yield server
