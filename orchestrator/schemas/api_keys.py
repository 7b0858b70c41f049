"""API keys and their scopes (docs/security.md): ``ApiKeyCreate`` comes in, ``ApiKey`` goes out, and
``ApiKeyCreated`` once, at creation, with the secret itself (the server keeps only its hash). The
scopes live in ``schemas.scopes`` (re-exported here), which every request's check needs without these
models."""

import datetime as dt
import uuid
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from orchestrator.schemas.base import InModel, Name, OutModel
from orchestrator.schemas.scopes import GRANTS, Scope, granted
from orchestrator.settings import short_duration

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


__all__ = ["GRANTS", "ApiKey", "ApiKeyCreate", "ApiKeyCreated", "Duration", "Scope", "granted"]
