"""Every list of the API pages by key (``services/keyset.py``): walking all pages by the ``Link``
header (and ``next`` for flow runs) returns every row once, in the list's order, with ties in the
order's first column; the deprecated ``offset`` still works; a bad cursor is a 422. On SQLite and
PostgreSQL (the ``api`` fixture)."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from orchestrator import schemas
from tests.integration.test_api import make_deployment

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def get(url: str, key: str | None = None) -> tuple[Any, str | None]:
    """JSON of a GET and the URL of its Link rel="next" (None: the last page)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
        link = answer.headers.get("Link")
        body = json.loads(answer.read())
    found = re.fullmatch(r'<([^>]+)>; rel="next"', link) if link else None
    return body, found.group(1) if found else None


def walk(url: str, key: str | None = None) -> tuple[list[Any], int]:
    """Every item of a list, following Link headers; and how many pages it took."""
    items, pages, next_url = [], 0, url
    while next_url is not None:
        body, next_url = get(next_url, key)
        items.extend(body["items"] if isinstance(body, dict) else body)
        pages += 1
    return items, pages


def status_of(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def newest_first(runs: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in sorted(runs, key=lambda r: (r["expected_start_time"], r["id"]), reverse=True)]


@pytest.fixture
def runs(api: Any) -> tuple[schemas.Deployment, list[dict[str, Any]]]:
    """23 runs of one deployment and 4 of another, their start times on 3 instants (ties)."""
    client = api.client()
    first, other = make_deployment(client), make_deployment(client, name="other")
    made = []
    for i in range(27):
        deployment = first if i < 23 else other
        run = client.create_flow_run(deployment.id, schemas.FlowRunCreate(scheduled_time=T0 + dt.timedelta(
            minutes=i % 3)))
        made.append(run.model_dump(mode="json"))
    return first, made


def test_flow_runs_walk_every_page_by_cursor(api: Any, runs: tuple[schemas.Deployment, list[dict[str, Any]]]) -> None:
    deployment, made = runs
    base = f"{api.url}/flow_runs"
    items, pages = walk(f"{base}?limit=5")
    assert pages == 6
    assert [r["id"] for r in items] == newest_first(made)  # nothing lost or repeated, ties by id

    # The body's `next` is the same cursor as the Link header's.
    body, link = get(f"{base}?limit=5")
    assert body["next"] is not None and f"cursor={body['next']}" in (link or "")
    assert (body["total"], body["total_capped"]) == (27, False)

    mine = [r for r in made if r["deployment_id"] == str(deployment.id)]
    items, _ = walk(f"{base}?limit=4&deployment_id={deployment.id}&state=SCHEDULED")
    assert [r["id"] for r in items] == newest_first(mine)


def test_flow_runs_offset_still_works_and_hands_over_a_cursor(
    api: Any, runs: tuple[schemas.Deployment, list[dict[str, Any]]]
) -> None:
    _, made = runs
    expected = newest_first(made)
    body, link = get(f"{api.url}/flow_runs?offset=5&limit=5")
    assert [r["id"] for r in body["items"]] == expected[5:10]
    assert link is not None and "offset" not in link  # the next page is read by key
    rest, _ = walk(link)
    assert [r["id"] for r in rest] == expected[10:]


def test_flow_runs_count_is_bounded(api: Any, runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.server.services import flow_runs

    monkeypatch.setattr(flow_runs, "COUNT_CAP", 10)
    body, _ = get(f"{api.url}/flow_runs?limit=3")
    assert (body["total"], body["total_capped"]) == (10, True)


def test_a_bad_cursor_is_a_422_naming_it(api: Any) -> None:
    for path in ("/flow_runs", "/deployments", "/automations", "/api_keys"):
        status, body = status_of(f"{api.url}{path}?cursor=bm90LWEta2V5")
        assert status == 422, path
        assert "cursor" in json.dumps(body["detail"]), body
    status, body = status_of(f"{api.url}/flow_runs?cursor=WyIyMDMwIiwgMV0&offset=3")
    assert status == 422 and "offset" in json.dumps(body["detail"])


def test_deployments_automations_and_api_keys_walk_every_page(api: Any) -> None:
    client = api.client()
    for flow in ("b-flow", "a-flow"):
        for name in ("z", "y", "x", "w"):
            make_deployment(client, flow_name=flow, name=name)
    items, pages = walk(f"{api.url}/deployments?limit=3")
    assert pages == 3
    assert [(d["flow_name"], d["name"]) for d in items] == sorted((f, n) for f in ("a-flow", "b-flow")
                                                                  for n in ("w", "x", "y", "z"))

    trigger = {"type": "event", "expect": ["x.y"], "posture": "Reactive", "threshold": 1}
    made = [client.request("POST", "/automations", body={"name": name, "trigger": trigger, "actions": []})["id"]
            for name in ("same", "same", "same", "b", "a", "same")]  # ties by name: ordered by id
    items, _ = walk(f"{api.url}/automations?limit=2")
    assert len(items) == len(made) and {a["id"] for a in items} == set(made)
    assert [(a["name"], a["id"]) for a in items] == sorted((a["name"], a["id"]) for a in items)

    # The first key closes the open server: the others are made and listed with it.
    admin = client.request("POST", "/api_keys", body={"name": "key-0", "scopes": ["admin"]})["secret"]
    for i in range(1, 5):
        api.client(api_key=admin).request("POST", "/api_keys", body={"name": f"key-{i}", "scopes": ["read"]})
    items, pages = walk(f"{api.url}/api_keys?limit=2", admin)
    assert [k["name"] for k in items] == [f"key-{i}" for i in range(5)] and pages == 3


def test_task_runs_and_deployment_versions_walk_every_page(api: Any) -> None:
    client = api.client()
    deployment = make_deployment(client)
    for i in range(4):
        client.update_deployment(deployment.id, schemas.DeploymentUpdate(description=f"v{i}"))
    versions, _ = walk(f"{api.url}/deployments/{deployment.id}/versions?limit=2")
    everything = client.request("GET", f"/deployments/{deployment.id}/versions", params={"limit": 1000})
    assert versions == everything and len(versions) == 5

    run = client.create_flow_run(deployment.id, schemas.FlowRunCreate())
    batch = [{"id": str(uuid.uuid4()), "name": f"t-{i}", "task_name": "t", "state_type": "COMPLETED",
              "state_name": "Completed", "created": (T0 + dt.timedelta(seconds=i % 2)).isoformat()}
             for i in range(9)]  # two instants: ties ordered by id
    client.request("POST", f"/flow_runs/{run.id}/task_runs", body=batch)
    items, pages = walk(f"{api.url}/flow_runs/{run.id}/task_runs?limit=4")
    assert pages == 3
    assert [t["id"] for t in items] == [t["id"] for t in sorted(batch, key=lambda t: (t["created"], t["id"]))]


def test_the_client_lists_every_page_unless_given_a_limit(api: Any) -> None:
    # More deployments than a page holds (1,000): `orch deployment ls` and the SDK see them all.
    from sqlalchemy import insert, select

    from orchestrator.server.db import models as m

    client = api.client()
    first = make_deployment(client, flow_name="many", name="d0000")
    with api.ctx.sessions.begin() as session:
        row = session.execute(select(m.Deployment.__table__).where(m.Deployment.id == first.id)).mappings().one()
        session.execute(insert(m.Deployment), [{**row, "id": uuid.uuid4(), "name": f"d{i:04}"} for i in range(1, 1005)])
    listed = client.list_deployments(flow_name="many")
    assert [d.name for d in listed] == [f"d{i:04}" for i in range(1005)]
    assert [d.name for d in client.list_deployments(flow_name="many", limit=3)] == ["d0000", "d0001", "d0002"]
    pages = list(client.pages("/deployments", {"flow_name": "many", "limit": 400}))
    assert [len(page) for page in pages] == [400, 400, 205]


def test_the_api_keys_order_is_an_index_not_a_sort(postgres_url: str) -> None:
    # Run keys grow with the runs: listing them page by page must not sort the whole table each time.
    from sqlalchemy import select, text

    from orchestrator.server.db import models as m
    from orchestrator.server.db.session import make_engine, migrate
    from orchestrator.server.services.api_keys import OLDEST_FIRST

    engine = make_engine(postgres_url)
    try:
        migrate(engine)
        statement = select(m.ApiKey).order_by(*OLDEST_FIRST.sql()).limit(200)
        with engine.connect() as connection:
            connection.execute(text("SET enable_seqscan = off"))  # an empty table: make the planner show its index
            compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
            plan = "\n".join(connection.execute(text(f"EXPLAIN {compiled}")).scalars())
        assert "ix_api_keys_created_name" in plan and "Sort" not in plan, plan
    finally:
        engine.dispose()


def _runs_in_states(session: Any, per_state: dict[tuple[str, str], int]) -> list[Any]:
    """``per_state[(type, name)]`` runs of one deployment, the states mixed over time as in a real
    history, start times a minute apart and 7 on each instant (ties), inserted in bulk; the (type,
    name, start, id) of each."""
    import random

    from sqlalchemy import insert

    from orchestrator.server.db import models as m

    flow = {"id": uuid.uuid4(), "name": "many"}
    deployment = {"id": uuid.uuid4(), "name": "d", "flow_id": flow["id"], "entrypoint": "f.py:f",
                  "work_pool_name": "pool"}
    session.execute(insert(m.Flow), [flow])
    session.execute(insert(m.Deployment), [deployment])
    states = [state for state, how_many in per_state.items() for _ in range(how_many)]
    random.Random(7).shuffle(states)
    rows = [{"id": uuid.uuid4(), "name": f"run-{i}", "flow_id": flow["id"], "deployment_id": deployment["id"],
             "work_pool_name": "pool", "state_type": state_type, "state_name": state_name,
             "expected_start_time": T0 + dt.timedelta(minutes=i // 7)}
            for i, (state_type, state_name) in enumerate(states)]
    session.execute(insert(m.FlowRun), rows)
    session.commit()
    return [(r["state_type"], r["state_name"], r["expected_start_time"], r["id"]) for r in rows]


def test_several_states_page_by_key_without_repeats(sessions: Any) -> None:
    # state=SCHEDULED&state=FAILED&state_name=Late: each run once (a Late run is SCHEDULED too), newest
    # first, every page, on SQLite and PostgreSQL; the count bounded as for one state.
    from orchestrator.server.services import flow_runs

    with sessions() as session:
        made = _runs_in_states(session, {("SCHEDULED", "Scheduled"): 40, ("SCHEDULED", "Late"): 30,
                                         ("FAILED", "Failed"): 25, ("COMPLETED", "Completed"): 50})
        kinds, names = ["SCHEDULED", "FAILED"], ["Late"]
        wanted = sorted((r for r in made if r[0] in kinds or r[1] in names), key=lambda r: (r[2], r[3]),
                        reverse=True)
        either = flow_runs.in_states(kinds, names)
        statement = flow_runs.query(dialect=session.bind.dialect.name)
        seen, cursor = [], None
        while True:
            rows, cursor = flow_runs.page(session, statement, 8, cursor=cursor, either=either)
            seen.extend(rows)
            if cursor is None:
                break
        assert [r.id for r in seen] == [r[3] for r in wanted]
        assert flow_runs.count(session, statement, either=either) == (95, False)
        capped = flow_runs.keyset.bounded_count(session, statement, 20, either=either, unique=flow_runs.m.FlowRun.id)
        assert capped == (20, True)


def test_several_states_read_a_page_not_every_match(postgres_url: str) -> None:
    # A page of `state=FAILED&state=CRASHED` reads about a page of each state's index. An IN list
    # cannot walk an index in order: PostgreSQL either sorted every match or walked the time index
    # dropping other states (398 rows here, ~sqrt(11 x runs) at worst: 3,300 in a million runs).
    from sqlalchemy import event, text

    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from orchestrator.server.services import flow_runs

    engine = make_engine(postgres_url)
    statements: list[tuple[str, Any]] = []
    try:
        with make_sessionmaker(engine)() as session:
            _runs_in_states(session, {("COMPLETED", "Completed"): 20000, ("FAILED", "Failed"): 250,
                                      ("CRASHED", "Crashed"): 250})
            session.execute(text("ANALYZE flow_runs"))
            session.commit()
            kinds = ["FAILED", "CRASHED"]
            either = flow_runs.in_states(kinds)
            statement = flow_runs.query(dialect="postgresql")

            def record(*args: Any) -> None:
                statements.append((args[2], args[3]))

            event.listen(engine, "before_cursor_execute", record)
            first_page, cursor = flow_runs.page(session, statement, 10, either=either)
            flow_runs.page(session, statement, 10, cursor=cursor, either=either)
            assert flow_runs.count(session, statement, either=either) == (500, False)
            event.remove(engine, "before_cursor_execute", record)
        assert len(first_page) == 10 and cursor is not None
        assert len(statements) == 3
        with engine.connect() as connection:
            for sql, parameters in statements:
                plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters).scalar()
                read = _rows_read_from(plan[0]["Plan"], "flow_runs")
                if "count(" in sql:
                    assert read <= 500, (read, sql)  # the matches, at most cap + 1 of each state
                else:
                    # A page: 11 of each state (and the rest of the 7 ties on the last instant each index
                    # walk reaches, to order them by id), then 11 by id.
                    assert read <= 100, (read, sql)
    finally:
        engine.dispose()


def _rows_read_from(node: dict[str, Any], table: str) -> int:
    """Rows ``table``'s scans in a plan (EXPLAIN ANALYZE's JSON) read: those they returned and those
    their filter dropped."""
    own = 0
    if node.get("Relation Name") == table:
        own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * node.get("Actual Loops", 1)
    return own + sum(_rows_read_from(child, table) for child in node.get("Plans", ()))


@pytest.mark.parametrize("filtered", [{"task_name": "rare"}, {"state": "FAILED"},
                                      {"task_name": "rare", "outside_flows": True}])
def test_the_task_runs_page_of_a_rare_task_or_state_reads_a_page_not_the_table(postgres_url: str,
                                                                              filtered: dict[str, Any]) -> None:
    # The UI's /task-runs filtered by a task or a state: along an index led by that column, a page
    # reads about a page of rows. Along (created, id) it read every newer task run first: all 20,000
    # here, as the rare ones are the oldest.
    from sqlalchemy import event, insert, text

    from orchestrator.server.db import models as m
    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from orchestrator.server.services import task_runs

    engine = make_engine(postgres_url)
    statements: list[tuple[str, Any]] = []
    try:
        with make_sessionmaker(engine)() as session:
            rare = [{"task_name": "rare", "state_type": "FAILED"}] * 60
            rows = [{"id": uuid.uuid4(), "name": f"t-{i}", "task_name": "common", "state_type": "COMPLETED",
                     **(rare[i] if i < len(rare) else {}), "state_name": "x", "tags": [],
                     "created": T0 + dt.timedelta(seconds=i), "updated": T0} for i in range(20000)]
            session.execute(insert(m.TaskRun), rows)
            session.execute(text("ANALYZE task_runs"))
            session.commit()

            def record(*args: Any) -> None:
                statements.append((args[2], args[3]))

            event.listen(engine, "before_cursor_execute", record)
            found, cursor = task_runs.page_all(session, limit=10, **filtered)
            event.remove(engine, "before_cursor_execute", record)
        assert [row.name for row, _ in found] == [f"t-{i}" for i in range(59, 49, -1)] and cursor is not None
        with engine.connect() as connection:
            sql, parameters = statements[0]
            plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters).scalar()
        assert _rows_read_from(plan[0]["Plan"], "task_runs") <= 50, plan
    finally:
        engine.dispose()
