"""``services.deployments.upsert`` and the automations a deployment's triggers make, on SQLite and
PostgreSQL: a new deployment without triggers reads and writes none (``orch deploy`` of many)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from orchestrator import schemas
from orchestrator.schemas.automations import deployment_owner
from orchestrator.server.db import models as m
from orchestrator.server.services import deployments, work_pools
from tests.harness import statements_sent


def _request(name: str, triggers: list[dict[str, Any]] | None = None) -> schemas.DeploymentCreate:
    return schemas.DeploymentCreate(flow_name="f", name=name, entrypoint="f.py:f", work_pool_name="p",
                                    triggers=triggers or [])


def test_a_new_deployment_without_triggers_touches_no_automation(sessions: Any) -> None:
    with sessions.begin() as session:
        work_pools.create(session, schemas.WorkPoolCreate(name="p", type="process"))
    with statements_sent(sessions.kw["bind"]) as sent, sessions.begin() as session:
        _, created = deployments.upsert(session, _request("plain"))
    statements = [s.statement for s in sent]
    assert created
    assert statements and not [s for s in statements if "automations" in s], statements

    # With triggers, a new deployment gets its automations; deployed again without, they go.
    with sessions.begin() as session:
        triggered, _ = deployments.upsert(session, _request("triggered", [{"expect": ["file.landed"]}]))
    with sessions() as session:
        owned = session.scalars(select(m.Automation.owner_resource)).all()
    assert owned == [deployment_owner(triggered.id)]
    with sessions.begin() as session:
        deployments.upsert(session, _request("triggered"))
    with sessions() as session:
        assert session.scalars(select(m.Automation)).all() == []
