"""Settings: one root object read from ``ORCH_*`` environment variables.

Nothing is built at import time: callers construct ``Settings()`` (or receive one) and pass it on,
so tests and several servers in one process never share hidden global state.
"""

import datetime as dt
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    home: Path = Field(Path("~/.orchestrator"), description="Local state folder (SQLite file, embedded broker).")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; postgresql+psycopg://... in production. Default: SQLite in ORCH_HOME."
    )
    broker_url: str | None = Field(
        None, description="redis://host:port/db in production. Default: an embedded broker that needs no server."
    )
    api_url: str = Field("http://127.0.0.1:4300/api", description="Where clients, workers and flow runs reach the API.")
    api_key: SecretStr | None = Field(None, description="Bearer key a client sends.")
    server_api_keys: SecretStr | None = Field(
        None, description="Comma-separated keys the server accepts; unset means open (local use)."
    )
    metrics_open: bool = Field(
        False, description="Serve /metrics without a key even when keys are in use (a scraper inside the "
        "cluster); otherwise it needs a key with the read scope, as the API does."
    )
    server_auth_failures_per_minute: int = Field(
        20, ge=1, description="Failed authentications one client address may make in a minute; after that "
        "it gets 429 with Retry-After until the oldest failure is a minute old."
    )
    run_key_grace_seconds: float = Field(
        600.0, ge=0, description="A flow run's own API key (issued at its claim) stops working this long after "
        "the run ends."
    )
    server_host: str = Field("127.0.0.1", description="Address `orch server start` binds.")
    server_port: int = Field(4300, description="Port `orch server start` binds.")
    server_processes: int = Field(
        1, ge=1, description="API processes `orch server start` runs on its port, each with the background "
        "services (as replicas of one server); more than 1 needs PostgreSQL. More than one helps where one "
        "process's CPU limits the API and the host has cores to spare; each adds memory and connections."
    )
    dispatcher_redispatch_seconds: float = Field(
        30.0, gt=0, description="A due run nobody claimed within this time is published again."
    )
    worker_heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often a worker (and a flow-run process) reports that it is alive. Three missed "
        "heartbeats make it OFFLINE and its runs recoverable by the reaper."
    )
    worker_cancel_grace_seconds: float = Field(
        10.0, ge=0, description="On cancellation, time between the polite stop (SIGTERM) and the forced one (SIGKILL)."
    )
    worker_prewarm: bool = Field(
        True, description="A process worker forks each flow-run process from a fork server (interpreter up, engine "
        "imported), saving each run about 0.2 s of start latency."
    )
    reaper_interval_seconds: float = Field(5.0, gt=0, description="How often the reaper looks for lost runs.")
    hub_reread_seconds: float | None = Field(
        None, gt=0, description="How often waiting requests and the dispatcher re-read the database in case a "
        "change signal was lost. Unset: 30 s on PostgreSQL (the event hub reaches every replica), 1-2 s on SQLite."
    )
    cancelling_timeout_seconds: float = Field(
        60.0, ge=0, description="A CANCELLING run whose worker has not confirmed by then is marked CANCELLED."
    )
    client_timeout_seconds: float = Field(30.0, gt=0, description="HTTP timeout of the API client.")
    default_work_pool_name: str | None = Field(
        None, description="The work pool `Flow.deploy()` and `orch deploy` use when none is given "
        "(Prefect's PREFECT_DEFAULT_WORK_POOL_NAME).")
    scheduler_min_runs: int = Field(
        3, ge=0, description="The scheduler keeps at least this many runs ahead per schedule."
    )
    scheduler_min_horizon_seconds: float = Field(
        3600.0, ge=0, description="... and at least this far ahead (both minimums are met)."
    )
    scheduler_max_runs: int = Field(100, ge=1, description="At most this many runs ahead per schedule.")
    scheduler_max_horizon_seconds: float = Field(
        100 * 86400.0, gt=0, description="At most this far ahead (100 days)."
    )
    scheduler_loop_seconds: float = Field(
        5.0, gt=0, description="Longest sleep of the scheduler; changes in this server wake it at once."
    )
    scheduler_late_after_seconds: float = Field(
        15.0, ge=0, description="A SCHEDULED run this many seconds past its time is named Late."
    )
    scheduler_backfill_max_runs: int = Field(10000, ge=1, description="Most runs one backfill may create.")
    events_retention: dt.timedelta = Field(
        dt.timedelta(days=7), gt=dt.timedelta(0), description="Events older than this are deleted: seconds, an "
        "ISO 8601 duration (P7D) or 30s / 15m / 12h / 7d."
    )
    runs_retention: dt.timedelta | None = Field(
        None, gt=dt.timedelta(0), description="Finished runs (a final state) that ended longer ago than this are "
        "deleted with their state history, logs and task runs; finished task runs outside any flow too; unset: kept "
        "forever. Same forms as events_retention."
    )
    logs_retention: dt.timedelta | None = Field(
        None, gt=dt.timedelta(0), description="Log lines older than this are deleted (their runs stay); unset: "
        "kept forever. Same forms as events_retention."
    )

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        # Only the drivers this project depends on: anything else would fail deep in SQLAlchemy with
        # a missing module. ``postgresql://`` means psycopg 3, the PostgreSQL driver installed.
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if sep and scheme.lower() in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        if not sep or not (scheme.lower().startswith("sqlite") or scheme.lower() == "postgresql+psycopg"):
            raise ValueError(f"unsupported database URL {redacted(value)!r}: use sqlite:///PATH or "
                             "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB")
        return value

    @field_validator("broker_url")
    @classmethod
    def _supported_broker(cls, value: str | None) -> str | None:
        if value is None or value.startswith(("redis://", "rediss://", "sqla+sqlite:///", "memory://")):
            return value
        raise ValueError(f"unsupported broker URL {redacted(value)!r}: use redis://HOST:6379/0 (rediss:// "
                         "for TLS), or leave it unset for the embedded broker")

    @field_validator("events_retention", "runs_retention", "logs_retention", mode="before")
    @classmethod
    def _short_duration(cls, value: object) -> object:
        return short_duration(value)

    @field_validator("server_port")
    @classmethod
    def _port(cls, value: int) -> int:
        return checked_port(value)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'orchestrator.db'}"

    @property
    def resolved_broker_url(self) -> str:
        # kombu's SQLAlchemy transport: a file next to the database, no server needed.
        return self.broker_url or f"sqla+sqlite:///{self.home_dir / 'broker.db'}"

    @property
    def accepted_api_keys(self) -> frozenset[str]:
        if self.server_api_keys is None:
            return frozenset()
        return frozenset(k.strip() for k in self.server_api_keys.get_secret_value().split(",") if k.strip())


_SHORT_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def short_duration(value: object) -> object:
    """``7d``-style text as seconds (pydantic reads numbers and ISO 8601 durations itself)."""
    if isinstance(value, str) and (match := _SHORT_DURATION.match(value.lower())):
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    return value


def checked_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"a port is between 1 and 65535, not {port}")
    return port


def redacted(url: str) -> str:
    """``url`` with its password (if any) written ``***``: for messages, logs, and API callers not
    entitled to the secret."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not sep or not at or not colon:
        return url
    return f"{scheme}://{user}:***@{hostport}{slash}{path}"
