"""A worker name belongs to one live worker of a pool: a worker's first heartbeat (``starting``) is
refused while an ONLINE worker has the name, takes over an OFFLINE worker's, and of several workers
starting under one name at once exactly one gets it. On SQLite and PostgreSQL, through the API."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import update

from orchestrator import schemas
from orchestrator.errors import Conflict
from orchestrator.server.db import models as m


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
