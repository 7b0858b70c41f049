"""The create-run route announces a new run and its Scheduled event in one hub publication (one
NOTIFY to the other replicas, not two), and that announcement still wakes a stream on another
replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.server.hub import EVENTS, RUNS
from orchestrator.settings import Settings
from pools.broker import MemoryBroker
from tests.conftest import live_server
from tests.harness import wait_until
from tests.integration.test_events_stream import subscribed


def test_a_created_runs_event_is_announced_with_the_run_and_reaches_another_replica(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def settings(name: str) -> Settings:  # no re-reads: only the hub can carry it in time
        return Settings(home=tmp_path / name, database_url=postgres_url, api_url="http://unused/api",
                        hub_reread_seconds=300)

    with live_server(settings("a"), broker=MemoryBroker(), run_services=False) as a, \
            live_server(settings("b"), broker=MemoryBroker(), run_services=False) as b, \
            subscribed(b, "event=orchestrator.flow-run.*") as live:
        client = a.client()
        client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
        deployment = client.upsert_deployment(schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="flows.py:f", work_pool_name="p"))
        publications: list[tuple[Any, ...]] = []
        publish = a.ctx.hub.publish

        def recorded(*events: Any) -> None:
            publications.append(events)
            publish(*events)

        monkeypatch.setattr(a.ctx.hub, "publish", recorded)
        run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
        wait_until("the run's event on the other replica's stream", lambda: len(live.events) >= 1, 15, 0.01)
        assert live.events[0][1]["event"] == "orchestrator.flow-run.Scheduled"
        assert live.events[0][1]["resource"]["orchestrator.resource.id"] == f"orchestrator.flow-run.{run.id}"
        announcing = [p for p in publications if any(topic == EVENTS for topic, _ in p)]
        assert len(announcing) == 1 and (RUNS, str(run.id)) in announcing[0], publications
        assert (EVENTS, "orchestrator.flow-run.Scheduled") in announcing[0]
