"""Creates that arrive together are written in one statement (``services/run_groups.py``): fewer
transactions than creates, each answered only once committed, a refused one failing alone, every
run published once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

from orchestrator import schemas
from orchestrator.server.db import models as m
from pools.names import run_queue
from tests.conftest import LiveServer
from tests.harness import statements_sent


@pytest.fixture
def postgres_api(postgres_url: str, tmp_path: Any) -> Iterator[LiveServer]:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker
    from tests.conftest import live_server

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_url="http://unused/api")
    with live_server(settings, broker=MemoryBroker(), run_services=False) as server:
        yield server


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "not reached in 30 s"
        time.sleep(0.01)


def _burst(
    api: LiveServer, bodies: list[dict[str, Any]], deployment_id: Any, *, refused_before: int = 0
) -> list[tuple[int, Any]]:
    """The creates of ``bodies`` sent at once while flow_runs is locked, so that they queue up
    (but ``refused_before`` of them, refused before their write); their answers once the lock is
    released."""
    answers: list[tuple[int, Any]] = [(0, None)] * len(bodies)

    def create(k: int) -> None:
        answers[k] = api.raw("POST", f"/deployments/{deployment_id}/runs", bodies[k])

    groups = api.ctx.run_groups
    with api.ctx.engine.connect() as locker:
        locker.execute(text("LOCK TABLE flow_runs IN SHARE MODE"))  # every INSERT waits for it
        threads = [threading.Thread(target=create, args=(k,)) for k in range(len(bodies))]
        for thread in threads:
            thread.start()
        # The leaders' statements wait on the lock; every other create waits in the queue (or
        # was refused before reaching it).
        _wait_for(
            lambda: (
                locker.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE relation = 'flow_runs'::regclass AND NOT granted"
                    )
                ).scalar_one()
                == groups.leaders
                and groups.waiting == len(bodies) - groups.leaders - refused_before
            )
        )
        locker.rollback()
    for thread in threads:
        thread.join()
    return answers


def _deployment(api: LiveServer) -> Any:
    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(
        schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p")
    )
    client.create_flow_run(deployment.id, schemas.FlowRunCreate())  # reads the target and keeps it
    api.broker.drain(run_queue("p", "default"), timeout=0)
    return deployment


def test_creates_arriving_together_share_a_statement_and_each_run_is_published_once(
    postgres_api: LiveServer,
) -> None:
    api = postgres_api
    deployment = _deployment(api)
    with statements_sent(api.ctx.engine) as sent:
        answers = _burst(api, [{"parameters": {"n": k}} for k in range(12)], deployment.id)
    assert [status for status, _ in answers] == [201] * 12
    # Two leaders' runs alone (held by the lock); each leader then hands the lead to the first create
    # still queued, which writes every create queued at that moment: the ten queued behind them in
    # one statement, or two when the second leader hands over before the first follower took them all.
    assert sum(s.statement.startswith("WITH") for s in sent) in (3, 4)
    ids = {body["id"] for _, body in answers}
    assert sorted(body["parameters"]["n"] for _, body in answers) == list(range(12))
    with api.ctx.sessions() as session:
        stored = {
            str(run_id)
            for run_id in session.scalars(
                select(m.FlowRun.id).where(m.FlowRun.deployment_id == deployment.id)
            )
        }
        states = session.scalar(
            select(func.count())
            .select_from(m.FlowRunState)
            .join(m.FlowRun)
            .where(m.FlowRun.deployment_id == deployment.id)
        )
    assert ids <= stored and len(stored) == 13 and states == 13
    published = api.broker.drain(run_queue("p", "default"), timeout=0)
    assert sorted(map(str, published)) == sorted(ids)  # each run of the burst once


def test_a_refused_create_fails_alone_and_the_others_of_its_group_are_written(
    postgres_api: LiveServer,
) -> None:
    api = postgres_api
    deployment = _deployment(api)
    # A run the database refuses (here a trigger's error) fails the group's statement, whose runs
    # are then written one by one: it fails alone, answered as when it came alone. A queue the
    # pool lacks is refused before any write.
    with api.ctx.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.parameters->>'n' = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$; "
                "CREATE TRIGGER refuse BEFORE INSERT ON flow_runs FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )
    alone = api.raw("POST", f"/deployments/{deployment.id}/runs", {"parameters": {"n": "refused"}})
    bodies: list[dict[str, Any]] = [{"parameters": {"n": k}} for k in range(8)]
    bodies[4] = {"parameters": {"n": "refused"}}
    bodies[6] = {"work_queue_name": "nowhere"}
    answers = _burst(api, bodies, deployment.id, refused_before=1)
    assert alone[0] >= 400 and answers[4] == alone
    assert answers[6][0] == 422 and "nowhere" in str(answers[6][1])
    assert [status for k, (status, _) in enumerate(answers) if k not in (4, 6)] == [201] * 6
    with api.ctx.sessions() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(m.FlowRun).where(m.FlowRun.deployment_id == deployment.id)
            )
            == 7
        )
