"""The control plane publishes to a plain ``redis://`` URL over its own connections (``pools/resp.py``),
not redis-py (issue 22: ~7 MB an idle server kept after its first publish): the same messages where
Celery's workers read them, the same answers and errors as through redis-py, connections that Redis
closed are replaced, and publishing never loads redis-py."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pools import resp
from pools.errors import BrokerUnavailable
from pools.names import run_queue
from pools.publish import RedisTaskPublisher
from tests.conftest import free_port
from tests.integration.test_broker_route import redis_with_password  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[2]
# A query option redis-py reads (its default value): the URL is no longer plain, so redis-py publishes.
VIA_REDIS_PY = "?health_check_interval=0"


def _outcome(url: str, queue: str) -> tuple[str, str]:
    publisher = RedisTaskPublisher(url)
    try:
        publisher.publish(queue, uuid.uuid4())
        published = "published"
    except BrokerUnavailable as error:
        published = f"unavailable: {error}"
    try:
        depth = f"depth {publisher.depth(queue)}"
    except BrokerUnavailable as error:
        depth = f"unavailable: {error}"
    finally:
        publisher.close()
    return published.replace(queue, "QUEUE"), depth.replace(queue, "QUEUE")


def test_publish_and_depth_answer_as_through_redis_py(redis_url: str,
                                                       redis_with_password: str) -> None:  # noqa: F811
    host_port, db = redis_url.removeprefix("redis://").rsplit("/", 1)
    urls = [redis_url, redis_with_password, f"redis://:x@{host_port}/{db}",
            redis_with_password.replace("s3cret", "wrong"), f"redis://{host_port}/9999",
            f"redis://127.0.0.1:{free_port()}/0"]
    for i, url in enumerate(urls):
        assert RedisTaskPublisher(url)._plain is not None and RedisTaskPublisher(url + VIA_REDIS_PY)._plain is None
        ours = _outcome(url, run_queue("p", f"ours-{i}"))
        theirs = _outcome(url + VIA_REDIS_PY, run_queue("p", f"theirs-{i}"))
        assert ours == theirs, url
    assert _outcome(redis_url, run_queue("p", "again")) == ("published", "depth 1")


def test_a_connection_redis_closed_is_replaced(redis_url: str) -> None:
    import redis

    publisher = RedisTaskPublisher(redis_url)
    queue = run_queue("p", "killed")
    try:
        publisher.publish(queue, uuid.uuid4())
        admin = redis.Redis.from_url(redis_url)
        try:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # the publisher's idle connection
        finally:
            admin.close()
        publisher.publish(queue, uuid.uuid4())
        assert publisher.depth(queue) == 2
    finally:
        publisher.close()


PUBLISH = r"""
import json, sys, uuid
from pools.broker import CeleryBroker
broker = CeleryBroker(sys.argv[1])
broker.identity()
broker.publish("orch/pool/p/q", uuid.uuid4())
print(json.dumps({"depth": broker.depth("orch/pool/p/q"), "redis": "redis" in sys.modules,
                  "celery": "celery" in sys.modules}))
"""


@pytest.mark.parametrize("suffix", ["", VIA_REDIS_PY])
def test_publishing_to_a_plain_redis_url_never_loads_redis_py(redis_url: str, suffix: str) -> None:
    done = subprocess.run([sys.executable, "-c", PUBLISH, redis_url + suffix], check=False, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"depth": 1, "redis": bool(suffix), "celery": False}


def test_a_redis_that_hangs_up_is_broker_unavailable() -> None:
    """A peer that accepts and closes at once (a proxy with no Redis behind it): the publish fails as
    BrokerUnavailable, whether the connection's greeting (AUTH) or the command meets the closed end."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up() -> None:
        while True:
            try:
                accepted, _ = listener.accept()
            except OSError:
                return  # the listener is closed: the test is over
            accepted.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        for url in (f"redis://127.0.0.1:{port}/0", f"redis://:secret@127.0.0.1:{port}/0"):
            publisher = RedisTaskPublisher(url)
            try:
                with pytest.raises(BrokerUnavailable, match="cannot publish to orch/pool/p/q"):
                    publisher.publish(run_queue("p", "q"), uuid.uuid4())
            finally:
                publisher.close()
    finally:
        listener.close()


def test_a_sent_message_redis_refuses_is_reported_once_its_reply_is_read(redis_url: str) -> None:
    """``send`` does not wait for Redis's reply: it is read later (``settle``, the connection's next
    call, or a send that finds ``UNREAD_REPLIES`` waiting). A message Redis refuses (its queue's key
    holds a string) is reported by ``lost`` once, with the reason; the others are pushed."""
    import redis

    refused_queue, queue = run_queue("p", "a-string"), run_queue("p", "q")
    client = redis.Redis.from_url(redis_url)
    client.set(refused_queue, "not a list")
    publisher = RedisTaskPublisher(redis_url)
    refused, taken = uuid.uuid4(), uuid.uuid4()
    try:
        publisher.send(refused_queue, refused)  # no error: not waited for
        publisher.send(queue, taken)
        assert publisher.lost() == []  # the replies not read yet
        publisher.settle()
        [(run_id, reason)] = publisher.lost()
        assert run_id == refused
        assert reason == f"cannot publish to {refused_queue}: Operation against a key holding the wrong kind of value"
        assert publisher.lost() == []
        for _ in range(resp.UNREAD_REPLIES):  # a send finding that many replies waiting reads them
            publisher.send(refused_queue, refused)
        assert publisher.lost() == []
        publisher.send(queue, taken)
        assert len(publisher.lost()) == resp.UNREAD_REPLIES
        publisher.send(refused_queue, refused)
        assert publisher.depth(queue) == 2  # a call reads the replies waiting first
        assert [run_id for run_id, _ in publisher.lost()] == [refused]
        assert client.get(refused_queue) == b"not a list"
    finally:
        publisher.close()
        client.close()


def test_sent_messages_lost_with_their_connection_are_reported() -> None:
    """A peer that takes the command and hangs up without a reply (Redis restarted meanwhile): the
    messages sent may or may not have been taken, so each is reported by ``lost``."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def take_and_hang_up() -> None:
        while True:
            try:
                accepted, _ = listener.accept()
            except OSError:
                return  # the listener is closed: the test is over
            accepted.recv(65536)  # the command arrived
            accepted.close()

    threading.Thread(target=take_and_hang_up, daemon=True).start()
    publisher = RedisTaskPublisher(f"redis://127.0.0.1:{port}/0")
    first, second = uuid.uuid4(), uuid.uuid4()
    try:
        publisher.send(run_queue("p", "q"), first)
        publisher.send(run_queue("p", "q"), second)
        publisher.settle()
        lost = publisher.lost()
        assert [run_id for run_id, _ in lost] == [first, second]
        assert all(reason.startswith(f"cannot publish to orch/pool/p/q: Error while reading from 127.0.0.1:{port}")
                   for _, reason in lost)
    finally:
        publisher.close()
        listener.close()
