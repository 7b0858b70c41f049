"""The tables few servers use are in the schema from the start, but mapped to classes only where their
rows are read (``db/models.py``'s docstring): a server's start maps none of them; the service that
reads rows of one maps it at its import, onto the same tables. Run in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from sqlalchemy.orm import configure_mappers
from orchestrator.server.api.app import create_app
from orchestrator.server.db.base import Base
from orchestrator.settings import Settings

create_app(Settings(database_url="sqlite:///" + sys.argv[1]), database_checked=True, run_services=False)
configure_mappers()
def mapped():
    return sorted(mapper.local_table.name for mapper in Base.registry.mappers)
at_start = mapped()
from orchestrator.server.services import webhooks
configure_mappers()
print(json.dumps({"schema": sorted(Base.metadata.tables), "at_start": at_start, "after": mapped(),
                  "same_tables": [m.class_.__table__ is Base.metadata.tables["webhooks"]
                                 for m in Base.registry.mappers if m.class_.__module__ == webhooks.__name__]}))
"""

FEW_SERVERS = {"flow_run_final_counts", "task_run_holders", "webhooks"}


def test_a_start_maps_none_of_the_tables_few_servers_use(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "db.sqlite")], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert FEW_SERVERS <= set(report["schema"])  # the schema is whole: create_all and the migrations' check
    assert not FEW_SERVERS & set(report["at_start"])
    assert {"flow_runs", "deployments", "events"} <= set(report["at_start"])
    assert set(report["after"]) - set(report["at_start"]) == {"webhooks"}
    assert report["same_tables"] == [True]  # services.webhooks.WebhookRow
