"""The PostgreSQL backend's CPU of the create-run route's one statement (the run, its state, its event
and the event's related rows), alone: no server, no HTTP, no Python of ours in the figure (issue 22).

    PYTHONPATH=<tree> python bench/create_statement_pg.py [--database orch_bench_stmt] [--redis-db 19]
                                                          [--executions 3000] [--rounds 3]
                                                          [--variant "DDL; DDL"]... [--in-transaction]

The tree's own app (``create_app``, services off) makes a pool and a deployment and creates runs
through the route's function until the statement runs with a kept target; the statement and its
parameters are taken as SQLAlchemy hands them to the driver (``before_cursor_execute``). Then, per
round, a copy of that database (``CREATE DATABASE ... TEMPLATE``) gets each ``--variant``'s DDL
(e.g. ``"DROP INDEX ix_flow_runs_tags"``: what one index costs; variants apply in turn, each on top
of those before, as a fresh copy starts each round) and one psycopg connection executes the
statement ``--executions`` times, prepared, with a new run id and event id each time, in autocommit
as the route sends it (``--in-transaction``: all in one transaction, rolled back: what the
statement costs without its own transaction's start, locks and commit). Prints the backend's CPU per
execution (``/proc/<pid>/stat``, user + system) for the base and after each variant, every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, as PYTHONPATH should say


def capture(database: str, redis_db: int) -> tuple[str, dict[str, Any], str]:
    """The route's statement with a kept target, its parameters, and the database's libpq URL."""
    from tests.harness import fresh_postgres

    database_url, broker_url = fresh_postgres(database, redis_db)
    os.environ.update(ORCH_DATABASE_URL=database_url, ORCH_BROKER_URL=broker_url,
                      ORCH_HOME=tempfile.mkdtemp(prefix="orch-statement-"))
    from create_instructions import idle_deployment  # bench/, beside this script
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    import orchestrator.server.api.routes.deployments as route
    from orchestrator import schemas
    from orchestrator.server.api.app import create_app
    from orchestrator.settings import Settings

    sent: list[tuple[str, dict[str, Any]]] = []
    with TestClient(create_app(Settings(), run_services=False)) as client:
        ctx = client.app.state.ctx
        deployment = idle_deployment(client)
        for _ in range(3):  # the target kept, so the last one is the guarded statement of every create
            route.create_flow_run(deployment, schemas.FlowRunCreate(), ctx)
        event.listen(ctx.engine, "before_cursor_execute",
                     lambda _c, _cur, statement, parameters, _ctx, _many: sent.append((statement, parameters)))
        route.create_flow_run(deployment, schemas.FlowRunCreate(), ctx)
    statement, parameters = next((s, p) for s, p in reversed(sent) if "INSERT INTO flow_runs" in s)
    return statement, dict(parameters), database_url.replace("postgresql+psycopg://", "postgresql://")


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_execution(url: str, statement: str, parameters: dict[str, Any], executions: int, in_transaction: bool) -> float:
    """Backend CPU seconds per execution, each with a new run id (and so event resource) and event id."""
    import psycopg

    run_id = json.loads(parameters["rows"])[0]["id"]
    event_id = json.loads(parameters["events"])[0]["id"]

    def fresh() -> dict[str, Any]:
        new_run, new_event = str(uuid.uuid4()), str(uuid.uuid4())
        return {**parameters, "rows": parameters["rows"].replace(run_id, new_run),
                "events": parameters["events"].replace(run_id, new_run).replace(event_id, new_event)}

    with psycopg.connect(url, autocommit=not in_transaction) as connection, connection.cursor() as cursor:
        for _ in range(200):  # prepared, planned generically (after psycopg's and PostgreSQL's first few)
            cursor.execute(statement, fresh(), prepare=True)
        start = backend_cpu(connection.info.backend_pid)
        for _ in range(executions):
            cursor.execute(statement, fresh(), prepare=True)
            if cursor.fetchone() in (None, (None,)):
                raise AssertionError("the statement wrote nothing (its guard refused it)")
        used = backend_cpu(connection.info.backend_pid) - start
        if in_transaction:
            connection.rollback()
    return used / executions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="orch_bench_stmt", help="PostgreSQL database (recreated; <name>_copy too)")
    parser.add_argument("--redis-db", type=int, default=19)
    parser.add_argument("--executions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="DDL statements, ';'-separated (repeat)")
    parser.add_argument("--in-transaction", action="store_true", help="every execution in one transaction")
    args = parser.parse_args()
    import psycopg

    statement, parameters, url = capture(args.database, args.redis_db)
    copy = f"{args.database}_copy"
    copy_url = url.rsplit("/", 1)[0] + f"/{copy}"
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    labels = ["base", *args.variant]
    figures: dict[str, list[float]] = {label: [] for label in labels}
    for round_ in range(args.rounds):
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {copy} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {copy} TEMPLATE {args.database}")
        for label in labels:
            if label != "base":
                with psycopg.connect(copy_url, autocommit=True) as connection:
                    for ddl in filter(None, (part.strip() for part in label.split(";"))):
                        connection.execute(ddl)
            figures[label].append(per_execution(copy_url, statement, parameters, args.executions, args.in_transaction))
            print(f"round {round_ + 1} {label}: {figures[label][-1] * 1e6:.0f} µs of the backend's CPU per execution",
                  flush=True)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {copy} WITH (FORCE)")
    for label, values in figures.items():
        print(f"{label}: median {statistics.median(values) * 1e6:.0f} µs "
              f"({', '.join(f'{v * 1e6:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
