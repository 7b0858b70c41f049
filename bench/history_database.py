"""The database ``bench/history.py`` measures on: its name, the stack that runs on it (server, pool
``bench``, deployments ``noop/bench`` and ``noop/other``, a worker) and the history written into it
by server-side SQL (runs, log lines, events and their related resources), then analysed."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.skeleton import FLOWS_PY
from bench.skeleton import Stack as SkeletonStack
from tests import harness

DATABASE, EMPTY, REDIS_DB = "orch_history", "orch_history_empty", 2


def psql(sql: str, database: str = "postgres") -> str:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-AtXq", "-c", sql],
                         check=True, capture_output=True, text=True, timeout=7200)
    return out.stdout.strip()


def database_url(name: str) -> str:
    return f"{harness.PG_SERVER}/{name}"


def built(name: str) -> bool:
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") != "1":
        return False
    return psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'bench_history'", name) == "1"


class Stack(SkeletonStack):
    """Server, pool ``bench``, deployments ``noop/bench`` and ``noop/other`` and a worker on a given
    PostgreSQL database (kept, unlike the skeleton benchmark's)."""

    def __init__(self, database: str) -> None:
        super().__init__("postgres")
        self.env.update(harness.postgres_env(database_url(database), f"redis://127.0.0.1:6379/{REDIS_DB}"))
        # The history is a year old: the default retention (7 days) would start deleting its events.
        self.env["ORCH_EVENTS_RETENTION"] = "P400D"

    def setup(self) -> None:
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-n", str(REDIS_DB), "FLUSHDB"], check=True, timeout=30,
                       capture_output=True)
        self.start_server(timeout=120)
        self.orch("work-pool", "create", "bench", "--type", "process")  # already there on a kept database
        (self.project / "flows.py").write_text(FLOWS_PY)
        self.run([sys.executable, "-c", ("from flows import noop; noop.deploy(name='bench', work_pool_name='bench'); "
                  "noop.deploy(name='other', work_pool_name='bench')")])

    def start_workers(self) -> None:
        self.start_worker("bench", "--limit", "4", timeout=120)


# --- the history ---------------------------------------------------------------------------------

RUNS_SQL = """
INSERT INTO flow_runs (id, name, flow_id, deployment_id, work_pool_name, work_queue_name, parameters,
  job_variables, tags, state_type, state_name, state_timestamp, expected_start_time, start_time, end_time,
  run_count, created, updated, worker_name, flow_version)
SELECT gen_random_uuid(), 'history-' || g, CAST(:flow AS uuid),
  CASE WHEN g % 10 = 0 THEN CAST(:other AS uuid) ELSE CAST(:deployment AS uuid) END, 'bench', 'default',
  '{"x": 1}'::jsonb, '{}'::jsonb, CASE WHEN g % 3 = 0 THEN '["nightly"]'::jsonb ELSE '[]'::jsonb END,
  st.type, initcap(st.type), t + interval '2 s', t, t + interval '1 s', t + interval '2 s', 1, t, t + interval '2 s',
  'worker', 'v1'
FROM generate_series(1, :runs) AS g,
  LATERAL (SELECT now() - interval '1 hour' - (g / 2) * interval '30 s' AS t) AS times,
  LATERAL (SELECT CASE WHEN g % 100 = 0 THEN 'FAILED' WHEN g % 500 = 1 THEN 'CRASHED'
                       WHEN g % 250 = 7 THEN 'CANCELLED' ELSE 'COMPLETED' END AS type) AS st
"""
LOGS_SQL = """
INSERT INTO logs (flow_run_id, timestamp, level, name, message)
SELECT r.id, r.start_time + n * interval '1 ms', 20, 'orchestrator.flow_runs', 'history line ' || n
FROM flow_runs AS r, generate_series(1, 2) AS n WHERE r.name LIKE 'history-%'
"""
# Five events per run (while --events lasts): its states and one of its own, each related to the
# run's deployment and pool; event_resources indexes the related resources as ``events.record`` does.
EVENTS_SQL = """
INSERT INTO events (id, occurred, received, event, resource_id, resource, related, payload)
SELECT gen_random_uuid(), r.start_time + k * interval '1 ms', r.start_time + k * interval '1 ms', e.name,
  'orchestrator.flow-run.' || r.id,
  jsonb_build_object('orchestrator.resource.id', 'orchestrator.flow-run.' || r.id,
                     'orchestrator.resource.name', r.name),
  jsonb_build_array(
    jsonb_build_object('orchestrator.resource.id', 'orchestrator.deployment.' || r.deployment_id,
                       'orchestrator.resource.role', 'deployment'),
    jsonb_build_object('orchestrator.resource.id', 'orchestrator.work-pool.bench',
                       'orchestrator.resource.role', 'work-pool')),
  '{}'::jsonb
FROM (SELECT * FROM flow_runs WHERE name LIKE 'history-%' ORDER BY expected_start_time
      LIMIT CEIL(:events / 5.0)) AS r,
  generate_series(1, 5) AS k,
  LATERAL (SELECT CASE k WHEN 1 THEN 'orchestrator.flow-run.Scheduled' WHEN 2 THEN 'orchestrator.flow-run.Pending'
                   WHEN 3 THEN 'orchestrator.flow-run.Running' WHEN 4 THEN 'orchestrator.flow-run.' || r.state_name
                   ELSE 'bench.step.done' END AS name) AS e
"""
LINKS_SQL = """
INSERT INTO event_resources (event_seq, resource_id, role, occurred)
SELECT e.seq, x ->> 'orchestrator.resource.id', x ->> 'orchestrator.resource.role', e.occurred
FROM events AS e, jsonb_array_elements(e.related) AS x
"""


def build_history(stack: Stack, runs: int, events: int) -> dict[str, float]:
    """Write the history through SQL while the server runs; returns how long each part took. As
    any bulk load does, the secondary indexes of the filled tables are dropped first and built
    again after (one sort each instead of a million random inserts), and the row triggers of the
    final-state counts are off during the load (the counts are added up once after it)."""
    from sqlalchemy import text

    from orchestrator.server.db import final_counts
    from orchestrator.server.db.session import make_engine

    ids = {name: stack.client.request("GET", f"/deployments/name/noop/{name}") for name in ("bench", "other")}
    engine = make_engine(database_url(DATABASE))
    took = {}
    tables = "'flow_runs', 'logs', 'events', 'event_resources'"
    try:
        with engine.begin() as connection:
            indexes = connection.execute(text(
                "SELECT i.indexname, i.indexdef FROM pg_indexes AS i WHERE i.schemaname = 'public' "
                f"AND i.tablename IN ({tables}) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)")).all()
            for name, _ in indexes:
                connection.execute(text(f'DROP INDEX "{name}"'))
            connection.execute(text("ALTER TABLE flow_runs DISABLE TRIGGER flow_runs_final_counts_insert"))
        for label, sql, values in (
            ("runs", RUNS_SQL, {"flow": ids["bench"]["flow_id"], "deployment": ids["bench"]["id"],
                                "other": ids["other"]["id"], "runs": runs}),
            ("logs", LOGS_SQL, {}),
            ("events", EVENTS_SQL, {"events": events}),
            ("event resources", LINKS_SQL, {}),
            ("indexes", ";".join(definition for _, definition in indexes), {}),
        ):
            t0 = time.perf_counter()
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL synchronous_commit = off"))
                connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
                connection.execute(text(sql), values)
            took[label] = time.perf_counter() - t0
            print(f"  {label}: {took[label]:.0f} s", flush=True)
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE flow_runs ENABLE TRIGGER flow_runs_final_counts_insert"))
            connection.execute(text(f"DELETE FROM {final_counts.TABLE}"))
            final_counts.seed(connection)
    finally:
        engine.dispose()
    return took


def analyze(database: str) -> float:
    t0 = time.perf_counter()
    psql("VACUUM ANALYZE", database)
    psql("CREATE TABLE bench_history (built timestamptz DEFAULT now())", database)
    return time.perf_counter() - t0
