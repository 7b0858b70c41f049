"""``GET /api/broker``: the server names its broker and the id stored in it, on the embedded broker
and on Redis; the password only to callers with a key when keys are set; 503 when the broker is
down; and a flushed Redis gets an id again (a worker starting later can still check)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.settings import Settings
from pools import identity
from pools.errors import BrokerUnavailable
from pools.names import BROKER_ID_KEY
from tests.conftest import free_port, live_server, missing_service


def test_embedded_broker_is_named_with_its_stored_id(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, api_url="http://unused/api")
    with live_server(settings, run_services=False) as server:
        status, body = server.raw("GET", "/broker")
    assert status == 200, body
    assert body["url"] == f"sqla+sqlite:///{tmp_path / 'home' / 'broker.db'}" == settings.resolved_broker_url
    assert body["embedded"] is True and body["redacted"] is False
    assert body["identity"] == identity.read(settings.resolved_broker_url)
    assert identity.read(f"sqla+sqlite:///{tmp_path / 'elsewhere' / 'broker.db'}") is None
    assert not (tmp_path / "elsewhere").exists()  # reading creates no broker file


def test_redis_broker_id_survives_a_flush(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    import redis

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, broker_url=redis_url,
                        api_url="http://unused/api")
    store = redis.Redis.from_url(redis_url)
    try:
        with live_server(settings, run_services=False) as server:
            status, body = server.raw("GET", "/broker")
            assert status == 200, body
            assert body == {"url": redis_url, "redacted": False, "embedded": False,
                            "identity": store.get(BROKER_ID_KEY).decode()}
            assert server.raw("GET", "/broker")[1]["identity"] == body["identity"]  # stable
            store.flushdb()  # the broker lost everything: the next worker must still find an id
            status, again = server.raw("GET", "/broker")
            assert status == 200 and again["identity"] == identity.read(redis_url) is not None
    finally:
        store.close()


def test_unreachable_broker_is_a_503_naming_it(tmp_path: Path, sqlite_url: str) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=url, api_url="http://unused/api")
    with live_server(settings, run_services=False) as server:
        status, body = server.raw("GET", "/broker")
    assert status == 503
    assert body["detail"].startswith("the server cannot reach its broker at redis://:***@127.0.0.1:")
    assert "secret" not in body["detail"]


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own that requires a password (the shared one has none)."""
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        missing_service("redis-server")
    port = free_port()
    process = subprocess.Popen([str(exe), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--requirepass", "s3cret"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    client = redis.Redis(port=port, password="s3cret", socket_connect_timeout=1)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://:s3cret@127.0.0.1:{port}/0"
    finally:
        client.close()
        process.kill()
        process.wait(timeout=10)


def test_password_only_to_callers_with_a_valid_key(tmp_path: Path, sqlite_url: str,
                                                   redis_with_password: str) -> None:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=redis_with_password,
                        server_api_keys="k1,k2", api_url="http://unused/api")
    with live_server(settings, run_services=False) as server:
        anonymous = server.client().read_broker()
        keyed = server.client(api_key="k2").read_broker()
        status, body = server.raw("GET", "/broker")  # no key at all
        from orchestrator.errors import Unauthorized

        with pytest.raises(Unauthorized):
            server.client(api_key="wrong").read_broker()
    assert anonymous.url == redis_with_password.replace("s3cret", "***") and anonymous.redacted
    assert keyed.url == redis_with_password and not keyed.redacted
    assert anonymous.identity == keyed.identity == identity.read(redis_with_password)
    assert status == 200 and "s3cret" not in str(body)


def test_open_server_gives_the_whole_url(tmp_path: Path, sqlite_url: str, redis_with_password: str) -> None:
    settings = Settings(home=tmp_path / "home", database_url=sqlite_url, broker_url=redis_with_password,
                        api_url="http://unused/api")
    with live_server(settings, run_services=False) as server:
        info = server.client().read_broker()
    assert info.url == redis_with_password and not info.redacted


def _via_redis_py(url: str) -> str | None:
    """What ``identity.read`` answered with redis-py alone, before its own exchange for plain URLs."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        value = client.get(BROKER_ID_KEY)
    except redis.RedisError as error:
        return f"unavailable: {error}"
    finally:
        client.close()
    return value.decode() if isinstance(value, bytes) else value


def _via_identity(url: str, create: bool) -> str | None:
    try:
        return identity.ensure(url, timeout=2) if create else identity.read(url, timeout=2)
    except BrokerUnavailable as error:
        return f"unavailable: {error}"


def test_the_start_check_answers_as_redis_py(redis_url: str, redis_with_password: str) -> None:
    """``orch server start`` reads (or stores) the broker's id over its own connection for a plain
    ``redis://`` URL, so that the start need not load redis-py: the same ids, the same errors (but
    for a missing password, where redis-py's RESP3 greeting words it otherwise)."""
    host_port, db = redis_url.removeprefix("redis://").rsplit("/", 1)
    password_port = redis_with_password.rsplit(":", 1)[1].split("/")[0]
    same_text = [redis_url, redis_with_password, f"redis://:x@{host_port}/{db}", f"redis://someone:x@{host_port}/{db}",
                 redis_with_password.replace("s3cret", "wrong").replace("/0", "/1"), f"redis://{host_port}/9999",
                 f"redis://127.0.0.1:{free_port()}/0"]
    for url in same_text:
        assert _via_identity(url, False) == _via_redis_py(url), url
        assert _via_identity(url, True) == _via_redis_py(url), url  # stored, and read back by redis-py
    assert identity.read(redis_url) is not None and identity.read(redis_with_password) is not None
    missing_password = f"redis://127.0.0.1:{password_port}/0"
    assert str(_via_identity(missing_password, False)).startswith("unavailable: ")
    assert str(_via_redis_py(missing_password)).startswith("unavailable: ")
