"""The one name rule, the settings' URL checks and redaction (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator import schemas
from orchestrator.settings import Settings, redacted


@pytest.mark.parametrize(("name", "problem"), [
    ("local", None),
    ("ünïcode pool 1", None),
    ("", "cannot be empty"),
    ("a/b", "cannot contain / (names may not contain / % & > <)"),
    ("50%<off>", "cannot contain % < > (names may not contain / % & > <)"),
    ("x" * 255, None),
    ("x" * 256, "is 256 characters long, the most is 255"),
])
def test_name_rule(name: str, problem: str | None) -> None:
    assert schemas.name_problem(name) == problem


@pytest.mark.parametrize("model", [schemas.WorkPoolCreate, schemas.WorkQueueCreate, schemas.WorkerHeartbeat])
def test_every_named_input_applies_the_rule(model: type) -> None:
    with pytest.raises(ValidationError) as raised:
        model(name="a/b")
    assert raised.value.errors()[0]["msg"] == schemas.name_problem("a/b")


def test_client_refuses_a_name_before_building_a_url() -> None:
    from orchestrator.client import Client
    from orchestrator.errors import InvalidInput

    client = Client("http://127.0.0.1:9/api")  # nothing listens: the check must come first
    with pytest.raises(InvalidInput, match="invalid work pool name 'a/queues'"):
        client.read_work_pool("a/queues")  # would otherwise be GET /work_pools/a/queues
    with pytest.raises(InvalidInput, match="invalid work queue name"):
        client.delete_work_queue("local", "q%2F")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("postgresql+psycopg://u:p@w@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("redis://user@h/0", "redis://user@h/0"),
    ("sqla+sqlite:////home/me/.orchestrator/broker.db", "sqla+sqlite:////home/me/.orchestrator/broker.db"),
])
def test_redacted(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_database_url_schemes() -> None:
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="sqlite:///x.db").resolved_database_url == "sqlite:///x.db"
    with pytest.raises(ValidationError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h/db'"):
        Settings(database_url="mysql://u:secret@h/db")


def test_broker_url_schemes_and_port() -> None:
    assert Settings(broker_url="rediss://h:6380/0").broker_url == "rediss://h:6380/0"
    with pytest.raises(ValidationError, match="unsupported broker URL"):
        Settings(broker_url="amqp://guest@h//")
    with pytest.raises(ValidationError, match="a port is between 1 and 65535, not 99999"):
        Settings(server_port=99999)
