"""A worker name belongs to one live worker of a pool: a worker's first heartbeat (``starting``) is
refused while an ONLINE worker has the name, takes over an OFFLINE worker's, and of several workers
starting under one name at once exactly one gets it. And to one process: the beats of a process
that lost its name (cut off while it went OFFLINE and was taken) are refused, by the instance id
each worker process sends. On SQLite and PostgreSQL, through the API."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from orchestrator import schemas
from orchestrator.errors import Conflict, WorkerNameTaken
from orchestrator.server.db import models as m
from orchestrator.server.services import leases
from tests.harness import wait_until


def silence(api: Any, name: str) -> None:
    """Make ``name``'s last heartbeat older than three heartbeats: its worker is OFFLINE."""
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3 * api.ctx.settings.worker_heartbeat_seconds + 60)
    with api.ctx.transaction() as session:
        session.execute(update(m.Worker).where(m.Worker.name == name).values(last_heartbeat=long_ago))


def statuses(client: Any) -> dict[str, str]:
    return {w.name: w.status for w in client.list_workers("p")}


def test_a_starting_worker_is_refused_the_name_of_an_online_worker(api: Any) -> None:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    client.heartbeat("p", "twin", starting=True)
    with pytest.raises(Conflict) as refused:
        client.heartbeat("p", "twin", starting=True)
    assert "worker name 'twin' is in use in pool 'p' by a worker that is ONLINE" in str(refused.value.detail)
    client.heartbeat("p", "twin")  # the holder's own beats go on
    client.heartbeat("p", "other", starting=True)  # another name is free
    assert statuses(client) == {"twin": "ONLINE", "other": "ONLINE"}


def test_a_starting_worker_takes_over_the_name_of_an_offline_worker(api: Any) -> None:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    client.heartbeat("p", "twin", starting=True)
    silence(api, "twin")
    assert statuses(client) == {"twin": "OFFLINE"}
    client.heartbeat("p", "twin", starting=True)
    assert statuses(client) == {"twin": "ONLINE"}


@pytest.mark.parametrize("held_before", ["new name", "offline holder"])
def test_of_workers_starting_at_once_under_one_name_one_gets_it(api: Any, held_before: str) -> None:
    admin = api.client()
    admin.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    if held_before == "offline holder":
        admin.heartbeat("p", "twin", starting=True)
        silence(api, "twin")
    starters = [api.client() for _ in range(4)]
    at_once = threading.Barrier(len(starters))
    outcomes: list[str] = []

    def start(client: Any) -> None:
        at_once.wait()
        try:
            client.heartbeat("p", "twin", starting=True)
            outcomes.append("started")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(c,)) for c in starters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["refused", "refused", "refused", "started"]


# --- one process per name: the instance id each worker process sends with its beats ---------------


def test_a_process_that_lost_its_name_is_refused_while_the_new_holder_is_online(api: Any) -> None:
    """A worker cut off from the API (a network partition) goes OFFLINE and a new worker takes its
    name: when the first one's beats reach the API again they are refused, whichever route carries
    them, and the holder's go on. Once the holder is OFFLINE, a beat takes the name back."""
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    first, second = uuid.uuid4(), uuid.uuid4()
    client.heartbeat("p", "twin", starting=True, instance=first)
    client.heartbeat("p", "twin", instance=first)
    silence(api, "twin")  # the partition: the first one's beats do not arrive
    client.heartbeat("p", "twin", starting=True, instance=second)
    with pytest.raises(WorkerNameTaken) as refused:
        client.heartbeat("p", "twin", instance=first)
    assert str(refused.value.detail).startswith(
        "worker name 'twin' in pool 'p' is held by another worker process now, which is ONLINE (last heartbeat ")
    assert refused.value.silent_seconds < refused.value.free_in_seconds  # the holder beats
    with pytest.raises(WorkerNameTaken):
        client.wait_for_cancellations("p", "twin", timeout=0, instance=first)
    client.heartbeat("p", "twin", instance=second)
    assert client.wait_for_cancellations("p", "twin", timeout=0, instance=second) == []
    assert statuses(client) == {"twin": "ONLINE"}
    silence(api, "twin")
    client.heartbeat("p", "twin", instance=first)  # nobody holds it: the beat takes it
    with pytest.raises(WorkerNameTaken):
        client.heartbeat("p", "twin", instance=second)


def test_a_starting_worker_repeating_its_first_beat_keeps_its_name(api: Any) -> None:
    """The same process sending its first heartbeat again (its answer was lost) is not refused."""
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    me = uuid.uuid4()
    client.heartbeat("p", "twin", starting=True, instance=me)
    client.heartbeat("p", "twin", starting=True, instance=me)
    with pytest.raises(WorkerNameTaken):
        client.heartbeat("p", "twin", starting=True, instance=uuid.uuid4())


def test_workers_that_send_no_instance_id_work_as_before(api: Any) -> None:
    """A worker of an older release sends no id: its beats are taken while it holds the name, a
    second one starting under a live name is refused as before. Under the name of a process that
    sends an id, a beat without one is refused; a process with an id takes over an id-less holder's
    name by beating (a name held since before the upgrade)."""
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    client.heartbeat("p", "old", starting=True)
    client.heartbeat("p", "old")
    assert client.wait_for_cancellations("p", "old", timeout=0) == []
    with pytest.raises(Conflict):
        client.heartbeat("p", "old", starting=True)
    new = uuid.uuid4()
    client.heartbeat("p", "old", instance=new)  # adopts the id-less name
    with pytest.raises(WorkerNameTaken):
        client.heartbeat("p", "old")
    client.heartbeat("p", "modern", starting=True, instance=uuid.uuid4())
    with pytest.raises(WorkerNameTaken):
        client.heartbeat("p", "modern")
    assert statuses(client) == {"old": "ONLINE", "modern": "ONLINE"}


def test_the_dropped_connection_of_a_process_that_lost_its_name_does_not_lapse_the_holder(api: Any) -> None:
    """A dropped cancellation long-poll lapses its worker's heartbeat (judged within seconds), but
    only the heartbeat of the process that opened it: not the new holder's of the name."""
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    first, second = uuid.uuid4(), uuid.uuid4()
    client.heartbeat("p", "twin", starting=True, instance=first)
    silence(api, "twin")
    host, port = api.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as held:
        held.sendall(f"GET /api/work_pools/p/workers/twin/cancellations?timeout=60&instance={first} HTTP/1.1\r\n"
                     f"Host: {host}\r\n\r\n".encode())
        wait_until("the long-poll to renew the first one's heartbeat", lambda: statuses(client) == {"twin": "ONLINE"})
        silence(api, "twin")  # then the partition
        client.heartbeat("p", "twin", starting=True, instance=second)
        beat = last_heartbeat(api, "twin")
    reaper = api.ctx.reaper
    wait_until("the first process seen dropping", lambda: leases.WorkerHolder("p", "twin") in reaper.dropped,
               timeout=30)
    assert last_heartbeat(api, "twin") == beat  # not backdated
    assert statuses(client) == {"twin": "ONLINE"}


def last_heartbeat(api: Any, name: str) -> dt.datetime:
    with api.ctx.sessions() as session:
        found = session.scalar(select(m.Worker.last_heartbeat).where(m.Worker.name == name))
    assert found is not None
    return found
