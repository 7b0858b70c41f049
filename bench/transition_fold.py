"""What folding a run's transition into one statement would buy (issue 22), measured below the
product: psycopg alone on the product's schema, no SQLAlchemy, no HTTP. Three ways to write the same
rows for each of a run's three transitions (claim, RUNNING, COMPLETED), one run after the other,
the ways alternating run by run, each on a connection of its own:

  ``today``      as ``services/transitions.py`` does on PostgreSQL: BEGIN, the guarded
                 ``UPDATE ... RETURNING``, the state row with the read of the rows before it
                 (``run_statements.add_state``), the event (``events.record``), COMMIT;
  ``one``        the same writes as one statement -- the update, the state row, the event and its
                 related-resource rows in data-modifying CTEs -- between BEGIN and COMMIT;
  ``one_auto``   that statement alone in autocommit: no BEGIN nor COMMIT round trip.

In the folded statement the event's id, its ``follows`` and its previous state come from the rows
the statement itself writes and reads, as they would have to: the id is
``emitted.derived_id(run, <state row id>)``, a UUID 5 (SHA-1), which PostgreSQL computes only with
the ``pgcrypto`` extension (``digest``), created in this bench's database. The rest of the event
(names, related resources) is a document built before, of the size a run's state event has.
Runs are written one at a time: the folded statement reads the rows before its state on the
statement's snapshot, which a transition that waited for another's commit on the run's row would
not see (bench/RESULTS.md, h1's fused statement: the ``xmin`` condition); the product would need that.

Per way: the client's wall time per transition (p50), its CPU and the PostgreSQL backend's CPU per
transition (/proc), over ``--runs`` runs per round.

Usage: python bench/transition_fold.py [--runs 300] [--rounds 3] [--database orch_bench_fold]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from worker_path import cpu_seconds

from orchestrator.server.services import emitted

EVENT_COLUMNS = "id, occurred, received, event, resource_id, resource, related, payload, follows"
SHAPE = ("id uuid, occurred timestamptz, received timestamptz, event varchar, resource_id varchar, "
         "resource jsonb, related jsonb, payload jsonb, follows uuid")
LINKS = ("links AS (INSERT INTO event_resources (event_seq, resource_id, role, occurred) "
         "SELECT ev.seq, x ->> 'orchestrator.resource.id', x ->> 'orchestrator.resource.role', ev.occurred "
         "FROM ev, jsonb_array_elements(ev.related) AS x)")
UPDATE = ("UPDATE flow_runs SET state_type = %(type)s, state_name = %(name)s, state_message = NULL, "
          "state_timestamp = %(now)s, updated = %(now)s, heartbeat_at = %(now)s, worker_name = 'w' "
          "WHERE id = %(run)s AND state_type = %(source)s RETURNING *")
STATE = ("WITH new_state AS (INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) "
         "VALUES (%(run)s, %(type)s, %(name)s, NULL, %(now)s) RETURNING id) "
         "SELECT new_state.id, e.id, e.type, e.name, e.message FROM new_state LEFT JOIN (SELECT id, type, name, message "
         "FROM flow_run_states WHERE flow_run_id = %(run)s ORDER BY id DESC LIMIT 2) e ON true")
EVENT = (f"WITH ev AS (INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM "
         f"jsonb_to_recordset(CAST(%(rows)s AS JSONB)) AS r({SHAPE}) ON CONFLICT (id) DO NOTHING "
         f"RETURNING seq, id, related, occurred), {LINKS} SELECT count(*) FROM ev")


def uuid5_sql(words: str) -> str:
    """``emitted.derived_id`` in SQL (pgcrypto's SHA-1): version and variant bits as uuid.uuid5 sets them."""
    digest = f"substring(digest(decode('{emitted._NAMESPACE.hex}', 'hex') || convert_to({words}, 'UTF8'), 'sha1') from 1 for 16)"
    return (f"encode(set_byte(set_byte({digest}, 6, (get_byte({digest}, 6) & 15) | 80), 8, "
            f"(get_byte({digest}, 8) & 63) | 128), 'hex')::uuid")


FOLDED = (
    f"WITH upd AS ({UPDATE}), "
    "before AS (SELECT s.id, s.type, s.name, s.message FROM flow_run_states s, upd "
    "WHERE s.flow_run_id = upd.id ORDER BY s.id DESC LIMIT 2), "
    "st AS (INSERT INTO flow_run_states (flow_run_id, type, name, message, timestamp) "
    "SELECT upd.id, upd.state_type, upd.state_name, upd.state_message, upd.state_timestamp FROM upd RETURNING id), "
    "prev AS (SELECT id, type, name, message, (SELECT count(*) FROM before) AS n FROM before ORDER BY id DESC LIMIT 1), "
    f"ev AS (INSERT INTO events ({EVENT_COLUMNS}) SELECT {uuid5_sql('upd.id::text || ' + repr('/') + ' || st.id::text')}, "
    "r.occurred, r.received, r.event, r.resource_id, r.resource, r.related, "
    "jsonb_set(jsonb_set(r.payload, '{initial_state}', jsonb_build_object('type', prev.type, 'name', prev.name)), "
    "'{intended,from}', to_jsonb(prev.type)), "
    f"CASE WHEN prev.n = 1 THEN {uuid5_sql('upd.id::text || ' + repr('/created'))} "
    f"ELSE {uuid5_sql('upd.id::text || ' + repr('/') + ' || prev.id::text')} END "
    f"FROM upd, st, prev, jsonb_to_recordset(CAST(%(rows)s AS JSONB)) AS r({SHAPE}) "
    f"ON CONFLICT (id) DO NOTHING RETURNING seq, id, related, occurred), {LINKS} "
    "SELECT upd.*, (SELECT id FROM st), (SELECT id FROM ev) FROM upd")

STEPS = (("PENDING", "Pending", "SCHEDULED"), ("RUNNING", "Running", "PENDING"), ("COMPLETED", "Completed", "RUNNING"))
WAYS = ("today", "one", "one_auto")


def event_document(run: uuid.UUID, name: str, now: dt.datetime) -> str:
    """A state event's row as ``events.postgres_document`` writes it: five related resources."""
    related = [{"orchestrator.resource.id": f"orchestrator.{kind}.{uuid.uuid4()}", "orchestrator.resource.role": kind,
                "orchestrator.resource.name": "some-name"}
               for kind in ("flow", "deployment", "work-queue", "work-pool", "worker")]
    return json.dumps([{
        "id": str(uuid.uuid4()), "occurred": now.isoformat(), "received": now.isoformat(),
        "event": f"orchestrator.flow-run.{name}", "resource_id": f"orchestrator.flow-run.{run}",
        "resource": {"orchestrator.resource.id": f"orchestrator.flow-run.{run}", "orchestrator.resource.name": "brave-otter",
                     "orchestrator.state-type": name.upper(), "orchestrator.state-name": name, "orchestrator.run-count": "1"},
        "related": related,
        "payload": {"intended": {"from": None, "to": name.upper()}, "initial_state": None,
                    "validated_state": {"type": name.upper(), "name": name}},
        "follows": None}])


def transition(connection: psycopg.Connection[Any], way: str, run: uuid.UUID, step: tuple[str, str, str]) -> None:
    type_, name, source = step
    now = dt.datetime.now(dt.UTC)
    params = {"run": run, "type": type_, "name": name, "source": source, "now": now,
              "rows": event_document(run, name, now)}
    if way == "today":
        assert connection.execute(UPDATE, params).fetchall()
        connection.execute(STATE, params).fetchall()
        connection.execute(EVENT, params).fetchall()
        connection.commit()
    else:
        assert connection.execute(FOLDED, params).fetchall()
        if way == "one":
            connection.commit()


def check(connection: psycopg.Connection[Any], run: uuid.UUID) -> None:
    """The folded statement's events: ids, ``follows`` and previous states as ``emitted.run_state_changed``'s."""
    states = connection.execute("SELECT id, type FROM flow_run_states WHERE flow_run_id = %s ORDER BY id", (run,)).fetchall()
    found = connection.execute("SELECT id, follows, payload -> 'initial_state' ->> 'type' FROM events "
                               "WHERE resource_id = %s ORDER BY seq", (f"orchestrator.flow-run.{run}",)).fetchall()
    expected = [(emitted.derived_id(run, states[i][0]),
                 emitted.derived_id(run, "created") if i == 1 else emitted.derived_id(run, states[i - 1][0]),
                 states[i - 1][1]) for i in range(1, len(states))]
    assert found == expected, (found, expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", default="orch_bench_fold")
    args = parser.parse_args()
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{args.database}"')
    url = f"host=127.0.0.1 user=postgres dbname={args.database}"
    from orchestrator.server.db.session import migrate
    from orchestrator.sql import make_engine
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}")
    migrate(engine)
    engine.dispose()
    setup = psycopg.connect(url, autocommit=True)
    setup.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    probe = uuid.uuid4()
    assert setup.execute(f"SELECT {uuid5_sql('%(w)s::text')}", {"w": f"{probe}/7"}).fetchone()[0] == emitted.derived_id(probe, 7)
    connections = {way: psycopg.connect(url, prepare_threshold=0, autocommit=way == "one_auto") for way in WAYS}
    backends = {way: c.info.backend_pid for way, c in connections.items()}
    try:
        for number in range(args.rounds):
            flow = uuid.uuid4()
            setup.execute("INSERT INTO flows (id, name, created, updated) VALUES (%s, %s, now(), now())", (flow, str(flow)))
            runs = [uuid.uuid4() for _ in range(args.runs * len(WAYS))]
            with setup.transaction():
                for run in runs:
                    setup.execute(
                        "INSERT INTO flow_runs (id, name, flow_id, work_pool_name, work_queue_name, parameters, "
                        "job_variables, tags, state_type, state_name, state_timestamp, expected_start_time, run_count, "
                        "created, updated) VALUES (%s, 'brave-otter', %s, 'p', 'default', '{}', '{}', '[]', 'SCHEDULED', "
                        "'Scheduled', now(), now(), 0, now(), now())", (run, flow))
                    setup.execute("INSERT INTO flow_run_states (flow_run_id, type, name, timestamp) "
                                  "VALUES (%s, 'SCHEDULED', 'Scheduled', now())", (run,))
            walls: dict[str, list[float]] = {way: [] for way in WAYS}
            cpu = {way: 0.0 for way in WAYS}
            backend = {way: 0.0 for way in WAYS}
            load = os.getloadavg()[0]
            for i, run in enumerate(runs):
                way = WAYS[i % len(WAYS)]
                b0, c0 = cpu_seconds([backends[way]]), time.process_time()
                for step in STEPS:
                    w0 = time.perf_counter()
                    transition(connections[way], way, run, step)
                    walls[way].append((time.perf_counter() - w0) * 1000)
                cpu[way] += time.process_time() - c0
                backend[way] += cpu_seconds([backends[way]]) - b0
            check(setup, runs[1])  # a run written by the folded statement: its events named as the product names them
            per = args.runs * len(STEPS) / 1000
            print(f"round {number + 1}, load {load:.1f}-{os.getloadavg()[0]:.1f}: " + "; ".join(
                f"{way} wall p50 {statistics.median(walls[way]):.3f} ms, client CPU {cpu[way] / per:.3f}, "
                f"backend CPU {backend[way] / per:.3f} ms" for way in WAYS), flush=True)
    finally:
        for c in connections.values():
            c.close()
        setup.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
