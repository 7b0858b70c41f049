"""API keys and their scopes (docs/security.md): ``ApiKeyCreate`` comes in, ``ApiKey`` goes out, and
``ApiKeyCreated`` once, at creation, with the secret itself (the server keeps only its hash)."""

import datetime as dt
import enum
import uuid
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from orchestrator.schemas.base import InModel, Name, OutModel
from orchestrator.settings import short_duration


class Scope(enum.StrEnum):
    """What a key may do. Each route needs one scope (``server/api/scopes.py``); a key's scopes grant
    those in ``GRANTS``."""

    ADMIN = "admin"  # everything: keys, work pools and queues, and all the others
    DEPLOY = "deploy"  # deployments, schedules, automations; and read
    RUN = "run"  # create and cancel runs, send events; and read
    WORKER = "worker"  # claim runs, report their states, heartbeats, logs (of its pools); and read
    READ = "read"  # read only


GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.DEPLOY: frozenset({Scope.DEPLOY, Scope.READ}),
    Scope.RUN: frozenset({Scope.RUN, Scope.READ}),
    Scope.WORKER: frozenset({Scope.WORKER, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
}


def granted(scopes: list[Scope] | frozenset[Scope] | set[Scope]) -> frozenset[Scope]:
    """Every scope the given ones grant."""
    return frozenset().union(*(GRANTS[s] for s in scopes)) if scopes else frozenset()


Duration = Annotated[dt.timedelta, BeforeValidator(short_duration)]


class ApiKeyCreate(InModel):
    name: Name
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    pools: list[Name] | None = Field(None, max_length=100, description="Only with the worker scope: the work "
                                     "pools the key may serve (unset: every pool).")
    expires_in: Duration | None = Field(None, gt=dt.timedelta(0), le=dt.timedelta(days=36500),
                                        description="Seconds, an ISO 8601 duration or 30d / 12h; unset: never.")

    @model_validator(mode="after")
    def _pools_need_worker(self) -> "ApiKeyCreate":
        if self.pools is not None and Scope.WORKER not in self.scopes:
            raise ValueError("pools limit a worker key: add the worker scope, or leave pools out")
        if self.pools is not None and Scope.ADMIN in self.scopes:
            raise ValueError("an admin key serves every pool: leave pools out")
        return self


class ApiKey(OutModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, shown to tell keys apart (not secret).")
    scopes: list[Scope]
    pools: list[str] | None
    run_id: uuid.UUID | None = Field(description="Set for a flow run's own key (issued at its claim).")
    created: dt.datetime
    expires: dt.datetime | None
    revoked: dt.datetime | None
    last_used: dt.datetime | None = Field(description="To the minute: refreshed at most once a minute.")


class ApiKeyCreated(ApiKey):
    secret: str = Field(description="The key itself. Shown this once: the server keeps only its SHA-256.")
