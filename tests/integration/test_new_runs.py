"""``insert_runs``, the one writer of new runs (API, scheduler, backfill), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, work_pools
from orchestrator.server.services.new_runs import CHUNK, insert_runs, run_values
from orchestrator.states import StateType

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def deployment(sessions: Any) -> m.Deployment:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
        created, _ = deployments.upsert(session, schemas.DeploymentCreate(
            flow_name="f", name="d", entrypoint="f.py:f", work_pool_name="p"))
        session.expunge(created)
        return created


def row(deployment: m.Deployment, key: str | None = None, **changes: Any) -> dict[str, Any]:
    values = run_values(
        flow_id=deployment.flow_id, deployment_id=deployment.id, deployment_version="7", work_pool_name="p",
        work_queue_name="default", parameters={"x": [1, {"y": None}]}, job_variables={"env": {"A": "1"}},
        tags=["b", "a", "b"], idempotency_key=key, expected_start_time=T0 + dt.timedelta(hours=1), now=T0)
    return {**values, **changes}


def test_run_values_sets_every_column(deployment: m.Deployment) -> None:
    """A column added to ``flow_runs`` must be decided here, for every creator at once."""
    assert set(row(deployment)) == {c.key for c in m.FlowRun.__table__.columns}


def test_a_run_is_written_as_built_with_its_first_state(sessions: Any, deployment: m.Deployment) -> None:
    """Every column as built, values of every JSON kind in the parameters and a time of another
    zone to the microsecond among them (the rows' document is written by pydantic's encoder)."""
    built = row(deployment, "k", dispatched_at=T0, parameters={
        "big": 2**70, "small": -1, "float": 0.1, "text": "é \u2028 \"q\" \\ {}", "none": None,
        "flags": [True, False], "nested": {"a": [1, {"b": []}]}},
        expected_start_time=dt.datetime(2030, 1, 1, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    with sessions.begin() as session:
        assert insert_runs(session, [built]) == [built["id"]]
    with sessions() as session:
        stored = session.get(m.FlowRun, built["id"])
        assert stored is not None
        for column in m.FlowRun.__table__.columns:
            assert getattr(stored, column.key) == built[column.key], column.key
        assert stored.tags == ["a", "b"]
        history = session.scalars(select(m.FlowRunState).where(m.FlowRunState.flow_run_id == built["id"])).all()
        assert [(h.type, h.name, h.message, h.timestamp) for h in history] == [
            (StateType.SCHEDULED, "Scheduled", None, T0)]


def test_an_existing_key_is_skipped_and_only_landed_ids_come_back(sessions: Any, deployment: m.Deployment) -> None:
    first = row(deployment, "same")
    with sessions.begin() as session:
        insert_runs(session, [first])
    again, fresh, keyless = row(deployment, "same"), row(deployment, "other"), row(deployment)
    with sessions.begin() as session:
        assert sorted(insert_runs(session, [again, fresh, keyless])) == sorted([fresh["id"], keyless["id"]])
    with sessions() as session:
        assert session.get(m.FlowRun, again["id"]) is None
        assert session.scalar(select(func.count()).select_from(m.FlowRunState)) == 3


def test_runs_without_keys_are_answered_by_their_count_alone(sessions: Any, deployment: m.Deployment) -> None:
    """On PostgreSQL, runs without an idempotency key all land (a NULL key meets no conflict) or,
    guarded by a target that changed, none: their statement answers no rows, only its count (no
    result for SQLAlchemy to describe), and writes what the statement answering ids writes."""
    from sqlalchemy import event

    from orchestrator.server.services import create_targets

    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's statement")
    answered: list[bool] = []  # per statement writing runs: it answered rows

    def after(_connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("WITH"):  # not the reads of the events' related names
            answered.append(cursor.description is not None)

    first, second, keyed = row(deployment), row(deployment), row(deployment, "k")
    stale = create_targets.guard_parameters(deployment.id, None, create_targets.Versions("0", None, None))
    event.listen(engine, "after_cursor_execute", after)
    try:
        with sessions.begin() as session:
            assert insert_runs(session, [first, second]) == [first["id"], second["id"]]
            assert insert_runs(session, [keyed]) == [keyed["id"]]
            with pytest.raises(create_targets.Stale):
                insert_runs(session, [row(deployment)], guard=stale)
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert answered == [False, True, False]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(m.FlowRun)) == 3
        assert sorted(session.scalars(select(m.FlowRunState.flow_run_id))) == sorted(
            [first["id"], second["id"], keyed["id"]])
        runs = m.Event.event == "orchestrator.flow-run.Scheduled"
        assert session.scalar(select(func.count()).select_from(m.Event).where(runs)) == 3
        # Each event's related resources: flow, deployment, queue, pool and two tags.
        assert session.scalar(select(func.count()).select_from(m.EventResource).join(
            m.Event, m.Event.seq == m.EventResource.event_seq).where(runs)) == 3 * 6


def test_many_runs_go_in_chunks(sessions: Any, deployment: m.Deployment) -> None:
    rows = [row(deployment, f"k{i}") for i in range(CHUNK * 2 + 3)]
    with sessions.begin() as session:
        assert len(insert_runs(session, rows)) == len(rows)
        assert insert_runs(session, []) == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(m.FlowRun)) == len(rows)
        assert session.scalar(select(func.count()).select_from(m.FlowRunState)) == len(rows)
        ids = set(session.scalars(select(m.FlowRunState.flow_run_id)))
        assert ids == {r["id"] for r in rows}
        assert all(isinstance(i, uuid.UUID) for i in ids)


def test_a_series_is_written_as_its_runs_one_by_one(sessions: Any, deployment: m.Deployment,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler's form: each run is the template with its own id, name, time and key, with
    the first state and the event ``insert_runs`` writes; an existing key is skipped. Statements
    of 3 runs, so a series is split across them."""
    from orchestrator.server.services import emitted, new_runs

    monkeypatch.setattr(new_runs, "SERIES_CHUNK", 3)
    with sessions.begin() as session:
        insert_runs(session, [row(deployment, "s1")])
    template = row(deployment, "ignored", tags=["auto-scheduled", "b"])
    times = [(T0 + dt.timedelta(hours=h), f"s{h}") for h in range(1, 6)]
    other = new_runs.Series(row(deployment, "x", parameters={"other": True}), [(T0, "o1")])
    with sessions.begin() as session:
        assert new_runs.insert_series(session, [new_runs.Series(template, times), other]) == 5  # s1 existed
    with sessions() as session:
        stored = {r.idempotency_key: r for r in session.scalars(select(m.FlowRun).where(
            m.FlowRun.idempotency_key != "s1"))}
        assert sorted(stored) == ["o1", "s2", "s3", "s4", "s5"]
        assert stored["o1"].parameters == {"other": True}
        assert len({r.id for r in stored.values()}) == 5 and template["id"] not in {r.id for r in stored.values()}
        assert {(r.id.version, r.id.variant) for r in stored.values()} == {(4, uuid.RFC_4122)}  # random ids
        for hours in range(2, 6):
            run = stored[f"s{hours}"]
            assert run.expected_start_time == T0 + dt.timedelta(hours=hours)
            for column in m.FlowRun.__table__.columns:
                if column.key not in ("id", "name", "idempotency_key", "expected_start_time"):
                    assert getattr(run, column.key) == template[column.key], column.key
            [state] = session.scalars(select(m.FlowRunState).where(m.FlowRunState.flow_run_id == run.id)).all()
            assert (state.type, state.name, state.timestamp) == (StateType.SCHEDULED, "Scheduled", T0)
            # The event insert_runs would have recorded for this very row.
            values = {c.key: getattr(run, c.key) for c in m.FlowRun.__table__.columns}
            [expected] = emitted.runs_created(session, [values])
            [event] = session.scalars(select(m.Event).where(m.Event.resource_id == f"orchestrator.flow-run.{run.id}"))
            assert (event.id, event.event, event.occurred) == (expected.id, expected.event, expected.occurred)
            assert (event.resource, event.related, event.payload) == (expected.resource, expected.related,
                                                                      expected.payload)
            linked = session.scalars(select(m.EventResource.resource_id).where(m.EventResource.event_seq == event.seq))
            assert sorted(linked) == sorted(r["orchestrator.resource.id"] for r in expected.related)


def test_the_event_rows_of_created_runs_are_those_of_their_events(sessions: Any, deployment: m.Deployment) -> None:
    """``emitted.runs_created_rows`` (what PostgreSQL's writer stores) builds the rows that
    ``events.event_rows`` makes of ``runs_created``'s events: the same JSON document, byte for byte,
    for runs of many shapes (tags repeated, unordered, none, not ASCII; a worker with and without
    its pool; a message, an empty one, one past the events' limit; no deployment, no queue; another
    state and run count; a direct run)."""
    from orchestrator.server.services import emitted, events
    from orchestrator.server.services.new_runs import direct_run_values

    rows = [
        row(deployment), row(deployment, "k", tags=[]),
        row(deployment, tags=["z", "é \u2028 \"q\"", "a", "z"], worker_name="w1", state_message="m", run_count=3),
        row(deployment, worker_name="w", work_pool_name=None, work_queue_name=None, state_message=""),
        row(deployment, deployment_id=None, state_type=StateType.PENDING, state_name="Pending",
            state_message="x" * (emitted.MESSAGE_LIMIT + 5)),
        row(deployment, state_timestamp=dt.datetime(2030, 1, 1, 14, 0, 0, 123456,
                                                    tzinfo=dt.timezone(dt.timedelta(hours=2)))),
        direct_run_values(flow_id=deployment.flow_id, name="direct", parameters={}, tags=["t"], now=T0),
    ]
    received = T0 + dt.timedelta(seconds=1, microseconds=7)
    with sessions() as session:
        expected = events.event_rows(emitted.runs_created(session, rows))
        for event in expected:
            event["received"] = received
        built = emitted.runs_created_rows(session, rows, received=received)
    assert events.postgres_document(built) == events.postgres_document(expected)
    assert [event["id"] for event in built] == [str(emitted.derived_id(r["id"], "created")) for r in rows]
