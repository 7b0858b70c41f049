"""Task runs and deployment history through the live API, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.server.api.audit import fingerprint
from tests.conftest import live_server
from tests.integration.test_api import make_deployment

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def task_run(**fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "name": "add-0", "task_name": "add", "version": "v1", "tags": ["t"],
            "state_type": "RUNNING", "state_name": "Running", "run_count": 1, "max_retries": 2,
            "start_time": NOW.isoformat(), "created": NOW.isoformat(), **fields}


def test_task_runs_are_upserted_in_batches_and_read_in_creation_order(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    first = task_run()
    second = task_run(name="add-1", created=(NOW + dt.timedelta(seconds=1)).isoformat())
    client.write_task_runs(run.id, [second, first])
    done = {**first, "state_type": "COMPLETED", "state_name": "Completed", "run_count": 3,
            "end_time": (NOW + dt.timedelta(seconds=5)).isoformat()}
    # The same run twice in a batch (as the process saw it twice before shipping): the last wins.
    client.write_task_runs(run.id, [first, done])

    read = client.read_task_runs(run.id)
    assert [t.name for t in read] == ["add-0", "add-1"]
    assert (read[0].state_type, read[0].run_count, read[0].max_retries, read[0].version) == ("COMPLETED", 3, 2, "v1")
    assert read[0].end_time == NOW + dt.timedelta(seconds=5)
    assert read[1].state_type == "RUNNING" and read[1].end_time is None


def test_task_runs_outside_flows_are_written_without_a_run_and_listed_newest_first(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    of_run = task_run()
    client.write_task_runs(run.id, [of_run])
    older = task_run(task_name="load", name="load-0")
    newer = task_run(name="add-7", created=(NOW + dt.timedelta(seconds=1)).isoformat())
    client.write_task_runs(None, [older, newer])
    client.write_task_runs(None, [{**newer, "state_type": "COMPLETED", "state_name": "Completed"}])
    # A report from outside any flow does not rewrite a flow run's task run.
    client.write_task_runs(None, [{**of_run, "state_type": "FAILED", "state_name": "Failed"}])

    listed = client.list_task_runs_outside_flows()
    assert [(t.name, t.flow_run_id, t.state_type) for t in listed] == [("add-7", None, "COMPLETED"),
                                                                        ("load-0", None, "RUNNING")]
    assert [t.name for t in client.list_task_runs_outside_flows(task_name="load")] == ["load-0"]
    assert client.read_task_runs(run.id)[0].state_type == "RUNNING"


def test_every_task_run_newest_first_with_its_flow_run_name(api: Any) -> None:
    """What the UI's task runs page reads (``task_runs.page_all``): flow runs' and standalone task
    runs together, each with its run's name, filtered and paged by key."""
    from orchestrator.server.services.task_runs import page_all

    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    at = [(NOW + dt.timedelta(seconds=i)).isoformat() for i in range(4)]
    client.write_task_runs(run.id, [task_run(name="in-0", created=at[0]),
                                    task_run(name="in-1", created=at[2], state_type="FAILED", state_name="Failed")])
    client.write_task_runs(None, [task_run(name="out-0", created=at[1]), task_run(name="out-1", created=at[3],
                                                                                task_name="load")])
    with api.app.state.ctx.sessions() as session:
        def names(**filters: Any) -> list[tuple[str, str | None]]:
            return [(row.name, run_name) for row, run_name in page_all(session, **filters)[0]]

        assert names() == [("out-1", None), ("in-1", run.name), ("out-0", None), ("in-0", run.name)]
        assert names(outside_flows=True) == [("out-1", None), ("out-0", None)]
        assert names(task_name="load") == [("out-1", None)]
        assert names(state="FAILED") == [("in-1", run.name)]
        first, cursor = page_all(session, limit=3)
        assert cursor is not None and len(first) == 3
        assert [row.name for row, _ in page_all(session, cursor=cursor, limit=3)[0]] == ["in-0"]
        with pytest.raises(InvalidInput):
            page_all(session, cursor="not-a-key")


def test_a_task_run_cannot_be_moved_to_or_written_for_another_run(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    mine = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": 1}))
    other = client.create_flow_run(deployment.id, schemas.FlowRunCreate(parameters={"x": 1}))
    entry = task_run()
    client.write_task_runs(mine.id, [entry])
    client.write_task_runs(other.id, [{**entry, "state_type": "FAILED", "state_name": "Failed"}])

    assert [t.state_type for t in client.read_task_runs(mine.id)] == ["RUNNING"]
    assert client.read_task_runs(other.id) == []
    with pytest.raises(NotFound):
        client.write_task_runs(uuid.uuid4(), [task_run()])
    with pytest.raises(NotFound):
        client.read_task_runs(uuid.uuid4())


def test_bad_task_runs_are_a_422_naming_the_field(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    with pytest.raises(InvalidInput, match="state_type"):
        client.write_task_runs(run.id, [task_run(state_type="DONE")])
    with pytest.raises(InvalidInput, match="run_count"):
        client.write_task_runs(run.id, [task_run(run_count=2**40)])
    status, body = api.raw("POST", f"/flow_runs/{run.id}/task_runs", {"not": "a list"})
    assert status == 422, body


def test_the_flow_version_reported_with_running_is_kept_with_the_run(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    client.claim_flow_run(run.id, "w")
    client.set_flow_run_running(run.id, worker_name="w", flow_version="abc123", flow_run_name="add-x-1")
    read = client.read_flow_run(run.id)
    assert (read.state.type, read.flow_version, read.name) == ("RUNNING", "abc123", "add-x-1")


def test_every_change_of_a_deployment_keeps_a_history_row(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client, version="1")
    make_deployment(client, version="1")  # the same again: nothing changed, no row
    make_deployment(client, version="2", description="second")
    client.set_deployment_paused(deployment.id, True)
    client.update_deployment(deployment.id, schemas.DeploymentUpdate(tags=["team-b"]))
    client.request("POST", f"/deployments/{deployment.id}/schedules", body={"interval": 3600, "slug": "hourly"})
    client.request("DELETE", f"/deployments/{deployment.id}/schedules/hourly")

    history = client.read_deployment_versions(deployment.id)
    assert [h.action for h in history] == ["created", "updated", "paused", "updated", "schedules", "schedules"]
    created, second, paused, tags, scheduled, unscheduled = history
    assert created.changes["version"] == {"from": None, "to": "1"}
    assert second.changes == {"version": {"from": "1", "to": "2"}, "description": {"from": None, "to": "second"}}
    assert second.version == "2"
    assert paused.changes == {"paused": {"from": False, "to": True}}
    assert tags.changes == {"tags": {"from": ["team-a"], "to": ["team-b"]}}
    assert scheduled.changes["schedules"]["from"] == []
    assert [s["slug"] for s in scheduled.changes["schedules"]["to"]] == ["hourly"]
    assert unscheduled.changes["schedules"]["to"] == []
    assert all(h.api_key_fingerprint is None for h in history)  # an open server knows no key
    assert history == sorted(history, key=lambda h: h.created)
    with pytest.raises(NotFound):
        client.read_deployment_versions(uuid.uuid4())


def test_history_names_the_key_by_a_fingerprint(database_url: str, tmp_path: Path) -> None:
    from orchestrator.settings import Settings
    from pools.broker import MemoryBroker

    settings = Settings(home=tmp_path, database_url=database_url, server_api_keys="k1, k2")
    with live_server(settings, broker=MemoryBroker()) as server:
        deployment = make_deployment(server.client(api_key="k1"))
        server.client(api_key="k2").set_deployment_paused(deployment.id, True)
        history = server.client(api_key="k1").read_deployment_versions(deployment.id)

    assert [(h.action, h.api_key_fingerprint) for h in history] == [("created", fingerprint("k1")),
                                                                    ("paused", fingerprint("k2"))]
    assert fingerprint("k1") != fingerprint("k2") and "k1" not in fingerprint("k1")


@pytest.mark.parametrize(("fields", "named"), [
    ({"name": "a\x00b"}, "name"),
    ({"tags": ["a\ud800b"]}, "tags"),
    ({"state_message": "a\x00b"}, "state_message"),
    ({"start_time": "0001-01-01T00:00:00+05:00"}, "start_time"),
    ({"max_retries": -1}, "max_retries"),
    ({"version": "v" * 256}, "version"),
])
def test_task_runs_the_database_cannot_hold_are_a_422_naming_the_field(api: Any, fields: dict[str, Any],
                                                                        named: str) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    status, body = api.raw("POST", f"/flow_runs/{run.id}/task_runs", [task_run(**fields)])
    assert status == 422, body
    assert named in str(body["detail"])


def test_a_batch_larger_than_the_limit_is_a_422(api: Any) -> None:
    client = api.client()
    run = client.create_flow_run(make_deployment(client).id, schemas.FlowRunCreate(parameters={"x": 1}))
    status, _body = api.raw("POST", f"/flow_runs/{run.id}/task_runs", [task_run() for _ in range(1001)])
    assert status == 422
    assert client.read_task_runs(run.id) == []


@pytest.mark.parametrize("ended", ["CRASHED", "CANCELLED"])
def test_a_flow_run_that_crashed_or_was_cancelled_ends_its_open_task_runs(api: Any, ended: str) -> None:
    from orchestrator.states import StateType

    client = api.client()
    deployment = make_deployment(client).id
    run, other = (client.create_flow_run(deployment, schemas.FlowRunCreate(parameters={"x": 1})) for _ in range(2))
    for each in (run, other):
        client.claim_flow_run(each.id, "w")
        client.set_flow_run_running(each.id, worker_name="w")
    done = task_run(name="add-0", state_type="COMPLETED", state_name="Completed", end_time=NOW.isoformat())
    hanging, waiting = task_run(name="add-1"), task_run(name="add-2", state_type="PENDING", state_name="Pending")
    client.write_task_runs(run.id, [done, hanging, waiting])
    client.write_task_runs(other.id, [task_run(name="other")])

    if ended == "CANCELLED":  # the user cancels; the worker stops the process and reports the end
        client.cancel_flow_run(run.id)
    client.set_flow_run_state(run.id, StateType(ended), message="the process is gone", worker_name="w")

    read = {t.name: t for t in client.read_task_runs(run.id)}
    assert read["add-0"].state_type == "COMPLETED"  # ended before: left as reported
    for name in ("add-1", "add-2"):
        assert read[name].state_type == ended and read[name].end_time is not None
        assert read[name].state_message == f"its flow run ended {ended} while this task run was open"
    assert [t.state_type for t in client.read_task_runs(other.id)] == ["RUNNING"]  # another run's: untouched
