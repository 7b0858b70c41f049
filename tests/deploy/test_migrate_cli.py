"""``orch server migrate``, the step the chart's migration Job runs: brings an empty database to
the newest migration (again and again: idempotent), and fails in one line, password hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ORCH = [sys.executable, "-m", "orchestrator.cli.main"]


def migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_DATABASE_URL"] = database_url
    return subprocess.run([*ORCH, "server", "migrate"], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from orchestrator.server.db.session import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head
    return head



def test_migrate_brings_an_empty_database_to_head_idempotently(empty_postgres: str, tmp_path: Path) -> None:
    for url in (empty_postgres, f"sqlite:///{tmp_path / 'db.sqlite'}"):
        for _ in range(2):
            result = migrate(url)
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip().endswith(f"is at migration {head_revision()}")
    from sqlalchemy import create_engine, inspect

    engine = create_engine(empty_postgres)
    try:
        assert {"flow_runs", "work_pools", "alembic_version"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(("url", "expected", "code"), [
    # Refused by the settings (an invalid setting: exit 2), naming the schemes that work.
    ("not a url", "Error: invalid setting: ORCH_DATABASE_URL: unsupported database URL 'not a url': use ", 2),
    ("nodb+nodriver://x/y", "Error: invalid setting: ORCH_DATABASE_URL: unsupported database URL ", 2),
    ("mysql://orch:hunter2secret@db/orch", "Error: invalid setting: ORCH_DATABASE_URL: unsupported database URL "
     "'mysql://orch:***@db/orch': use sqlite:///PATH or postgresql+psycopg://", 2),
    ("postgresql+psycopg://orch:hunter2secret@127.0.0.1:{port}/orch",
     "Error: cannot migrate the database at postgresql+psycopg://orch:***@127.0.0.1:{port}/orch: ", 1),
])
def test_migrate_fails_in_one_line_without_the_password(url: str, expected: str, code: int) -> None:
    port = free_port()  # nothing listens there
    result = migrate(url.format(port=port))
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(port=port)), result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
