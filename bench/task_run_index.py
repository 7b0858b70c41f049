"""What the task runs page's index (migration 0016, ``task_runs(created, id)``) costs the writers
and saves the page (issue 22), checkouts alternating.

For each checkout, in a subprocess with that checkout first on ``sys.path``: a fresh PostgreSQL
database migrated by that checkout's code, 2,000 flow runs, then 40,000 task runs written as a
flow-run process reports them (``services/task_runs.write``, batches of 100, each task run sent
twice: RUNNING, then COMPLETED), one commit per batch. Counted: the CPU seconds of the
PostgreSQL backend that served those writes (``/proc/<pid>/stat``; PostgreSQL on this machine) and
of the writing process, and the size of the table's indexes after them. Then the UI's first page (every task run, newest first, 51 rows) under
``EXPLAIN (ANALYZE, BUFFERS)``: its plan, buffers touched and time. With ``--filters`` (migration
0017), the table is then filled to 200,000 task runs in bulk (50 common tasks, one rare task of 100
runs among the oldest, 0.5 % FAILED), and the filtered first pages are explained the same way:
``task=rare``, ``state=FAILED``, ``task=common-7``, ``task=rare&state=FAILED``.

    python bench/task_run_index.py --code /tmp/old --code /tmp/new [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ADMIN = os.environ.get("ORCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

CHILD = r'''
import datetime as dt, json, os, resource, sys, uuid
from sqlalchemy import create_engine, select, text
from orchestrator import schemas
from orchestrator.server.db import models as m
from orchestrator.server.db.session import make_engine, make_sessionmaker, migrate
from orchestrator.server.services import task_runs

admin_url, name = sys.argv[1], sys.argv[2]
admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
with admin.connect() as c:
    c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    c.execute(text(f'CREATE DATABASE "{name}"'))
url = admin_url.rsplit("/", 1)[0] + "/" + name
engine = make_engine(url)
migrate(engine)
sessions = make_sessionmaker(engine)
with engine.begin() as c:
    c.execute(text("INSERT INTO flows (id, name, created, updated) VALUES (gen_random_uuid(), 'f', now(), now())"))
    c.execute(text("""INSERT INTO flow_runs (id, name, flow_id, parameters, job_variables, tags, state_type, state_name,
        state_timestamp, expected_start_time, run_count, crash_restarts, created, updated)
        SELECT gen_random_uuid(), 'r' || i, (SELECT id FROM flows), '{}', '{}', '[]', 'RUNNING', 'Running', now(),
        now(), 1, 0, now(), now() FROM generate_series(1, 2000) i"""))
    runs = [row[0] for row in c.execute(text("SELECT id FROM flow_runs ORDER BY name"))]
start = dt.datetime.now(dt.UTC)
batches = []
for b in range(400):
    run = runs[b % len(runs)]
    rows = [dict(id=uuid.uuid4(), name=f"t-{b}-{i}", task_name="t", state_type="RUNNING", state_name="Running",
                 run_count=1, start_time=start, created=start + dt.timedelta(milliseconds=b * 100 + i))
            for i in range(100)]
    batches.append((run, rows))
def backend_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

with sessions() as session:  # the pool's one connection, used by every batch below (one thread)
    pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
db0 = backend_cpu(pid)
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
for run, rows in batches:
    for state in ("RUNNING", "COMPLETED"):
        with sessions.begin() as session:
            task_runs.write(session, run, [schemas.TaskRunWrite(**{**r, "state_type": state,
                                                                    "state_name": state.title()}) for r in rows])
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
with sessions() as session:
    assert session.execute(text("SELECT pg_backend_pid()")).scalar() == pid, "the pool changed connection"
db1 = backend_cpu(pid)
with engine.connect() as c:
    indexes = {r[0]: r[1] for r in c.execute(text(
        "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes WHERE relname = 'task_runs'"))}
    c.execute(text("ANALYZE task_runs"))
    query = select(m.TaskRun).order_by(m.TaskRun.created.desc(), m.TaskRun.id.desc()).limit(51)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    c.execute(text(sql)).all()  # warm
    plan = [r[0] for r in c.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
filters = {}
if "--filters" in sys.argv:
    with engine.begin() as c:
        c.execute(text("""INSERT INTO task_runs (id, name, task_name, tags, state_type, state_name, run_count,
            max_retries, created, updated)
            SELECT gen_random_uuid(), 'f-' || i, CASE WHEN i % 16 = 0 AND i <= 1600 THEN 'rare'
                ELSE 'common-' || (i % 50) END,
            '[]', CASE WHEN i % 200 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, 'x', 1, 0,
            timestamp with time zone '2020-01-01' + i * interval '1 second', now()
            FROM generate_series(1, 160000) i"""))
    with engine.connect() as c:
        c.execute(text("ANALYZE task_runs"))
        for label, where in (("task=rare", dict(task_name="rare")), ("state=FAILED", dict(state="FAILED")),
                             ("task=common-7", dict(task_name="common-7")),
                             ("task=rare&state=FAILED", dict(task_name="rare", state="FAILED"))):
            query = task_runs._selected(outside_flows=False, **where).order_by(
                m.TaskRun.created.desc(), m.TaskRun.id.desc()).limit(51)
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
            c.execute(text(sql)).all()  # warm
            lines = [r[0] for r in c.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
            filters[label] = {"plan": " | ".join(p.strip() for p in lines[:3]),
                              "buffers": next((p.strip() for p in lines if "Buffers" in p), ""),
                              "ms": lines[-1].split(":")[1].strip()}
        filters["rows"] = c.execute(text("SELECT count(*) FROM task_runs")).scalar()
engine.dispose()
with admin.connect() as c:
    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
print(json.dumps({"postgres_cpu_s": round(db1 - db0, 2),
                  "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 2),
                  "index_bytes": sum(indexes.values()), "indexes": sorted(indexes),
                  "page_plan": " | ".join(p.strip() for p in plan[:4]), "page_buffers": next((p.strip() for p in plan if "Buffers" in p), ""),
                  "page_ms": plan[-1].split(":")[1].strip(), "filters": filters}))
'''


def measure(code: str, name: str, filters: bool) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": code}
    # cwd: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH.
    done = subprocess.run([sys.executable, "-c", CHILD, ADMIN, name, *(["--filters"] if filters else [])],
                          env=env, cwd=code, capture_output=True,
                          text=True, check=True, timeout=900)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", required=True, help="a checkout (repeat)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db-prefix", default="orch_bench_tri")
    parser.add_argument("--filters", action="store_true", help="also explain the filtered pages at 200,000 rows")
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        for index, code in enumerate(args.code):
            load = os.getloadavg()[0]
            result = measure(code, f"{args.db_prefix}_{index}", args.filters)
            print(json.dumps({"round": round_, "code": code, "load1": round(load, 1), **result}), flush=True)


if __name__ == "__main__":
    main()
