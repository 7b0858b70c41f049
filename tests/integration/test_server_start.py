"""What ``orch server start`` loads before it answers: on a database already at the newest migration
it neither loads alembic (the revision is read with plain SQL) nor celery/kombu (the broker is built
at the first publish), nor the workers' clients, nor what only a scrape of ``/metrics`` or the UI's
YAML tool needs; once it answers, the garbage collector runs again (it is off while the server
starts, and what the start built is frozen); a new, empty database gets the models' schema,
stamped at head, without alembic either; a database behind head is still brought to head, by the
server start as by ``migrate()``, and concurrent starts on PostgreSQL still queue on the advisory
lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator.server.db.session import MIGRATIONS, current_revisions, head_revisions, make_engine, migrate
from tests.conftest import free_port
from tests.harness import wait_until
from tests.migrations import differences_from_the_models, upgrade_to

REPO = Path(__file__).resolve().parents[2]
# Not needed to serve an idle API: migrations tooling, the publisher's client, the workers' clients.
NOT_AT_START = {"alembic", "mako", "celery", "kombu", "docker", "kubernetes", "rich", "jinja2", "prometheus_client",
                "wsgiref", "yaml"}

# The servers' scripts below wait for the first health answer with ``wait_for_health(port)``: this
# text, composed into each (through http.client, which the server imports itself, unlike urllib.request).
WAIT_FOR_HEALTH = r"""
import http.client, threading


def wait_for_health(port):
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
        try:
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return
        except OSError:  # not listening yet
            threading.Event().wait(0.02)
        finally:
            connection.close()
"""

# Runs the real ``orch server start`` and, once health answers 200, prints the loaded modules, the
# collector's state, and how many times the database was brought to head (``migrate`` called).
SERVER_DRIVER = WAIT_FOR_HEALTH + r"""
import gc, json, os, signal, sys, threading

from orchestrator.server.db import session

port = sys.argv[1]
migrations = []
bring_to_head = session.migrate


def counted_migrate(engine):
    migrations.append(engine.url)
    bring_to_head(engine)


session.migrate = counted_migrate  # before the start imports the app, which imports it by name


def report_when_healthy():
    wait_for_health(port)
    print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
    for _ in range(500):  # the collector is back on once the server listens (at most 10 s)
        if gc.isenabled():
            break
        threading.Event().wait(0.02)
    print("GC " + json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}), flush=True)
    print("MIGRATE " + json.dumps(len(migrations)), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=report_when_healthy, daemon=True).start()
sys.argv = ["orch", "server", "start", "--host", "127.0.0.1", "--port", port]
from orchestrator.cli.main import main

main()
"""

# ``migrate()`` alone, in a fresh interpreter: did it need alembic?
MIGRATE_DRIVER = r"""
import sys
from orchestrator.server.db.session import make_engine, migrate

engine = make_engine(sys.argv[1])
migrate(engine)
engine.dispose()
print("ALEMBIC", "alembic" in sys.modules)
"""


def child_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(ORCH_HOME=str(tmp_path / "home"), ORCH_DATABASE_URL=database_url,
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    return env


def served_report(script: str, tmp_path: Path, database_url: str) -> dict[str, Any]:
    """Run ``script`` (a real ``orch server start`` on a free port, given as its argument, that prints
    one ``REPORT <json>`` line and stops the server) in a child process; that JSON."""
    result = subprocess.run([sys.executable, "-c", script, str(free_port())], env=child_env(tmp_path, database_url),
                            capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return json.loads(lines[0].split(" ", 1)[1])


def start_report(tmp_path: Path, database_url: str, broker_url: str | None = None,
                 ) -> tuple[set[str], dict[str, object], int]:
    """The modules ``orch server start`` has loaded when its health check first answers 200, the
    collector's state once it answers, and how many times it called ``migrate`` (``broker_url``:
    ORCH_BROKER_URL, default the embedded broker)."""
    env = child_env(tmp_path, database_url)
    if broker_url is not None:
        env["ORCH_BROKER_URL"] = broker_url
    result = subprocess.run([sys.executable, "-c", SERVER_DRIVER, str(free_port())],
                            env=env, capture_output=True, text=True, timeout=90, check=False)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in result.stdout.splitlines()
             if line.startswith(("MODULES ", "GC ", "MIGRATE "))}
    assert result.returncode == 0 and len(lines) == 3, result.stdout + result.stderr
    return set(json.loads(lines["MODULES"])), json.loads(lines["GC"]), json.loads(lines["MIGRATE"])


def modules_at_health(tmp_path: Path, database_url: str) -> set[str]:
    """Top-level packages loaded by ``orch server start`` when its health check first answers 200."""
    return {name.split(".")[0] for name in start_report(tmp_path, database_url)[0]}


def migrate_in_child(tmp_path: Path, database_url: str) -> bool:
    """Run ``migrate()`` in a fresh interpreter; whether it loaded alembic."""
    result = subprocess.run([sys.executable, "-c", MIGRATE_DRIVER, database_url],
                            env=child_env(tmp_path, database_url), capture_output=True, text=True, timeout=90,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1] == "True"


def revisions(database_url: str) -> frozenset[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return current_revisions(connection)
    finally:
        engine.dispose()



@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orchestrator.db'}"
    return str(request.getfixturevalue("empty_postgres"))


def test_head_is_read_from_the_scripts_as_alembic_reads_it() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revisions() == frozenset(ScriptDirectory.from_config(config).get_heads())


def test_restart_at_head_loads_neither_alembic_nor_the_broker(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    engine.dispose()
    loaded = modules_at_health(tmp_path, database_url)
    assert {"fastapi", "sqlalchemy", "orchestrator"} <= loaded  # the report is of a real server
    assert loaded & NOT_AT_START == set()


def test_collector_is_off_during_the_start_only(database_url: str, tmp_path: Path) -> None:
    _, collector, _ = start_report(tmp_path, database_url)
    assert collector["enabled"] is True
    assert int(collector["frozen"]) > 10_000  # the modules, models and routes of the start


def test_server_start_loads_neither_typer_nor_the_other_commands(database_url: str, tmp_path: Path) -> None:
    """``orch server start --host H --port P`` is served straight from its arguments (``cli/main.py``):
    the API process never holds the CLI's framework nor the modules of the other commands."""
    loaded, _, _ = start_report(tmp_path, database_url)
    assert "orchestrator.server.api.app" in loaded  # the report is of a real server
    assert {"typer", "rich"} & {name.split(".")[0] for name in loaded} == set()
    assert {"orchestrator.cli.commands", "orchestrator.cli.server", "orchestrator.cli.worker",
            "orchestrator.cli.deploy", "orchestrator.cli.help_format"} & loaded == set()


def test_a_postgresql_server_loads_no_sqlite(postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    """PostgreSQL and Redis: nothing of SQLite is loaded (the models' partial indexes name no
    ``sqlite_*`` option, which SQLAlchemy imports its SQLite dialect and sqlite3 to check)."""
    loaded, _, _ = start_report(tmp_path, postgres_url, redis_url)
    assert "orchestrator.server.db.models" in loaded
    assert {"sqlite3", "sqlalchemy.dialects.sqlite"} & loaded == set()


def test_a_new_sqlite_database_gets_the_partial_indexes(sqlite_url: str) -> None:
    """Their condition is given to SQLite when the tables are created (as the migrations do)."""
    engine = make_engine(sqlite_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            created = dict(connection.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE name IN ('ix_flow_runs_end_time_id', "
                "'ix_flow_runs_worker_name')")).all())
    finally:
        engine.dispose()
    assert created == {
        "ix_flow_runs_end_time_id": "CREATE INDEX ix_flow_runs_end_time_id ON flow_runs (end_time, id) "
                                    "WHERE end_time IS NOT NULL",
        "ix_flow_runs_worker_name": "CREATE INDEX ix_flow_runs_worker_name ON flow_runs (worker_name) "
                                    "WHERE worker_name IS NOT NULL",
    }


def test_server_start_brings_the_database_to_head_once(empty_database_url: str, tmp_path: Path) -> None:
    """Its own check does it (beside the API's import); the app's startup does not do it again."""
    _, _, migrations = start_report(tmp_path, empty_database_url)
    assert migrations == 1
    assert revisions(empty_database_url) == head_revisions()


def test_server_start_gives_a_new_database_the_models_schema(empty_database_url: str, tmp_path: Path) -> None:
    """The check that creates it runs beside the API's import (``cli/server.py``)."""
    loaded = modules_at_health(tmp_path, empty_database_url)
    assert loaded & NOT_AT_START == set()
    assert revisions(empty_database_url) == head_revisions()
    assert differences_from_the_models(empty_database_url) == []


def test_server_start_brings_a_database_behind_head_to_head(empty_database_url: str, tmp_path: Path) -> None:
    upgrade_to(empty_database_url, "0002")
    assert revisions(empty_database_url) == {"0002"}
    loaded = modules_at_health(tmp_path, empty_database_url)
    assert "alembic" in loaded
    assert revisions(empty_database_url) == head_revisions()


def test_migrate_loads_alembic_only_when_behind_head(empty_database_url: str, tmp_path: Path) -> None:
    upgrade_to(empty_database_url, "0002")
    assert migrate_in_child(tmp_path, empty_database_url)  # behind: the rest is applied
    assert revisions(empty_database_url) == head_revisions()
    assert not migrate_in_child(tmp_path, empty_database_url)  # at head: nothing to load
    assert differences_from_the_models(empty_database_url) == []


def test_a_new_database_gets_the_models_schema_at_head_without_alembic(empty_database_url: str,
                                                                      tmp_path: Path) -> None:
    assert not migrate_in_child(tmp_path, empty_database_url)  # empty: created from the models
    assert revisions(empty_database_url) == head_revisions()
    assert differences_from_the_models(empty_database_url) == []
    # Stamped as ``alembic stamp`` stamps: alembic reads it and finds nothing to do.
    upgrade_to(empty_database_url, "head")
    assert revisions(empty_database_url) == head_revisions()


def test_a_database_with_tables_but_no_revision_is_left_to_alembic(empty_database_url: str,
                                                                   tmp_path: Path) -> None:
    """Not ours to create over: whatever is there goes through the migrations (which fail loudly
    on a clash) rather than ``create_all``, which would quietly skip the existing tables."""
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE somebody_elses (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()

    assert migrate_in_child(tmp_path, empty_database_url)
    assert revisions(empty_database_url) == head_revisions()


def test_a_database_ahead_of_this_release_is_refused(database_url: str, tmp_path: Path) -> None:
    """A newer release migrated it: as before, alembic refuses rather than serving a schema it
    does not know (the revision comparison must not take "not equal" for "behind, fine")."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(Exception, match="9999"):
            migrate(engine)
    finally:
        engine.dispose()


def test_concurrent_first_starts_on_postgres_queue_on_the_lock(empty_postgres: str, tmp_path: Path) -> None:
    """Servers starting together on an empty database wait on advisory lock 4300 (held here) and
    then migrate one after the other: each finds the database at head or brings it there."""
    engine = make_engine(empty_postgres)
    children: list[subprocess.Popen[str]] = []
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(4300)"))
            children = [subprocess.Popen([sys.executable, "-c", MIGRATE_DRIVER, empty_postgres],
                                         env=child_env(tmp_path, empty_postgres), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True) for _ in range(3)]

            def waiting_on_the_lock() -> bool:
                exited = [child.args for child in children if child.poll() is not None]
                assert exited == [], "a start went ahead while another held the migration lock"
                with engine.connect() as c:
                    waiting = c.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")).scalar_one()
                return waiting == len(children)

            wait_until("every start to wait on the migration lock", waiting_on_the_lock, timeout=60)
            holder.execute(text("SELECT pg_advisory_unlock(4300)"))
            holder.commit()
        outcomes = [child.communicate(timeout=120) for child in children]
        assert [child.returncode for child in children] == [0] * len(children), outcomes
        assert revisions(empty_postgres) == head_revisions()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        engine.dispose()


# A real ``orch server start``; at its first health answer, the database's other sessions (the
# server's), oldest first: what each last ran.
SESSIONS_AT_HEALTH = WAIT_FOR_HEALTH + r"""
import json, os, signal, sys, threading

import psycopg

port = sys.argv[1]


def report_when_healthy():
    wait_for_health(port)
    url = os.environ["ORCH_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        queries = [row[0] for row in connection.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " ORDER BY backend_start")]
    print("REPORT " + json.dumps(queries), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=report_when_healthy, daemon=True).start()
sys.argv = ["orch", "server", "start", "--host", "127.0.0.1", "--port", port]
from orchestrator.cli.main import main

main()
"""


def test_the_server_uses_the_connection_its_database_check_opened(postgres_url: str, tmp_path: Path) -> None:
    """The check's engine, at head, is the app's: its connection, opened before the event hub's
    LISTEN connection, serves the services' first passes, where a second engine would start one more
    PostgreSQL backend and send SQLAlchemy's first-connect queries again."""
    queries = served_report(SESSIONS_AT_HEALTH, tmp_path, postgres_url)
    assert any(query.startswith("LISTEN") for query in queries)  # the report is of a real server's sessions
    assert not queries[0].startswith("LISTEN"), queries
