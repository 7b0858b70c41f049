"""The flow-run process's task-run shipper (orchestrator/sdk/task_runs.py) against a live API: the
newest state of each task run is sent once, a refused batch is dropped (it would be refused
again), and what could not be sent waits for the next flush."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.sdk.task_runs import TaskRunRecord, TaskRunShipper
from tests.conftest import free_port

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration


@pytest.fixture
def run(worker_api: Any) -> Any:
    client = worker_api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="p", type="process"))
    deployment = client.upsert_deployment(schemas.DeploymentCreate(flow_name="f", name="d", entrypoint="f.py:f",
                                                                   work_pool_name="p"))
    return client, client.create_flow_run(deployment.id, schemas.FlowRunCreate())


def record(name: str, **fields: Any) -> TaskRunRecord:
    return TaskRunRecord(name=name, task_name="t", version="1", tags=["a"], max_retries=2, **fields)


def test_the_newest_state_of_each_task_run_is_sent(run: Any) -> None:
    client, flow_run = run
    shipper = TaskRunShipper(client, flow_run.id)
    first, second = record("t-0"), record("t-1")
    shipper.put(first)
    first.running()
    shipper.put(first)
    shipper.put(second)
    first.finished("COMPLETED", "Completed")
    shipper.put(first)
    shipper.flush()

    stored = {t.name: t for t in client.read_task_runs(flow_run.id)}
    assert (stored["t-0"].state_type, stored["t-0"].run_count) == ("COMPLETED", 1)
    assert stored["t-0"].end_time is not None
    assert stored["t-1"].state_type == "PENDING"


def test_an_unsent_batch_waits_for_the_next_flush_and_a_refused_one_is_dropped(run: Any) -> None:
    client, flow_run = run
    gone = Client(f"http://127.0.0.1:{free_port()}/api", retry_seconds=0)  # nothing listens there
    shipper = TaskRunShipper(gone, flow_run.id)
    shipper.put(record("waits"))
    shipper.flush()  # cannot reach the API: kept for the next flush
    gone.close()
    assert client.read_task_runs(flow_run.id) == []
    shipper.client = client
    shipper.flush()
    assert [t.name for t in client.read_task_runs(flow_run.id)] == ["waits"]

    bad = record("bad")
    bad.state_type = "NOT-A-STATE"
    shipper.put(bad)
    shipper.flush()  # refused (422): sending it again would be refused again, so it is dropped
    shipper.put(record("later"))
    shipper.flush()
    assert [t.name for t in client.read_task_runs(flow_run.id)] == ["waits", "later"]
