"""Secret job variables as the server shows them: the pool's ``variables`` schema decides
(``orchestrator/masking.py``), looked up once per session for the answers that need it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.masking import MASK, mask_values
from orchestrator.server.db import models as m

_CACHE_KEY = "orchestrator.pool_variables"


def pool_variables(session: Session | None, pool_name: str | None) -> dict[str, Any] | None:
    """The ``variables`` schema of a pool, or None when there is no session or no such pool.
    Kept in ``session.info`` so a list of runs of one pool reads it once."""
    if session is None or pool_name is None:
        return None
    cache: dict[str, dict[str, Any] | None] = session.info.setdefault(_CACHE_KEY, {})
    if pool_name not in cache:
        template = session.scalar(select(m.WorkPool.base_job_template).where(m.WorkPool.name == pool_name))
        variables = (template or {}).get("variables") if isinstance(template, Mapping) else None
        cache[pool_name] = variables if isinstance(variables, dict) else None
    return cache[pool_name]


def remember_pool(session: Session, pool_name: str, template: Mapping[str, Any] | None) -> None:
    """A caller that has read the pool's template already saves the query (the create-run route)."""
    variables = (template or {}).get("variables")
    session.info.setdefault(_CACHE_KEY, {})[pool_name] = variables if isinstance(variables, dict) else None


def forget_pool(session: Session, pool_name: str) -> None:
    """A pool's template changed in this session: read it again next time."""
    session.info.get(_CACHE_KEY, {}).pop(pool_name, None)


def job_variables(session: Session | None, pool_name: str | None, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Job variables as every answer but the claim shows them. Without a session to read the
    pool's schema every value is masked: unknown is treated as secret."""
    if not values:
        return dict(values or {})
    if session is None:
        return {key: (None if value is None else MASK) for key, value in values.items()}
    return mask_values(pool_variables(session, pool_name), values)
