"""Signatures Prefect accepts, end to end: the schema the SDK computes is registered with the
deployment and enforced by the API, and a real process worker's flow-run process hands the flow
coerced Python values (``Field`` defaults, an arbitrary class, ``*args`` / ``**kwargs``, enums,
dates)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InvalidInput
from tests.worker_runs import new_run
from workers.process import ProcessWorker

pytest_plugins = ["tests.worker_runs"]
pytestmark = pytest.mark.integration

FLOWS_PY = '''\
import datetime as dt
import enum

from pydantic import Field

from orchestrator import flow


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Engine:
    pass


def kind(value):
    return type(value).__name__


@flow
def with_field(x: int = Field(default=3, description="how many"), label: str = Field("a", max_length=5)):
    return {"x": x, "x_type": kind(x), "label": label}


@flow
def with_class(engine: Engine, n: int = 1):
    return {"engine": engine, "n": n}


@flow
def variadic(a: int, *args: int, **kwargs: float):
    return {"a": a, "args": list(args), "kwargs": kwargs, "kinds": [kind(v) for v in kwargs.values()]}


@flow
def typed(color: Color, when: dt.datetime, *, day: dt.date = dt.date(2030, 1, 1)):
    return {"color": kind(color), "value": color.value, "hour": when.hour, "tz": str(when.tzinfo), "day": kind(day)}
'''


@pytest.fixture
def setup(worker_api: Any, tmp_path: Path) -> tuple[Any, str, Path]:
    from orchestrator import schemas

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "flows.py").write_text(FLOWS_PY)
    client = worker_api.client()
    pool = f"process-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(schemas.WorkPoolCreate(name=pool, type="process"))
    return client, pool, flows


def deploy(client: Any, pool: str, flows: Path, function: str) -> Any:
    from orchestrator import schemas
    from orchestrator.parameters import parameter_schema
    from orchestrator.runtime.entrypoint import load_entrypoint

    fn = load_entrypoint(f"flows.py:{function}", str(flows))
    return client.upsert_deployment(schemas.DeploymentCreate(
        flow_name=function.replace("_", "-"), name="sig", entrypoint=f"flows.py:{function}", path=str(flows),
        work_pool_name=pool, parameter_openapi_schema=parameter_schema(fn.fn), enforce_parameter_schema=True))


def run(worker_api: Any, client: Any, pool: str, deployment: Any, parameters: dict[str, Any]) -> Any:
    flow_run = new_run(client, deployment, parameters=parameters)
    worker = ProcessWorker(client, pool=pool, name="sig", api_url=worker_api.url, prewarm=False)
    try:
        worker.handle(flow_run.id)
    finally:
        worker.stop()
    done = client.read_flow_run(flow_run.id)
    assert done.state.type == "COMPLETED", (done.state, [e.message for e in client.read_logs(flow_run.id)])
    return done.result


def test_field_defaults_reach_the_flow_as_values(worker_api: Any, setup: tuple[Any, str, Path]) -> None:
    client, pool, flows = setup
    deployment = deploy(client, pool, flows, "with_field")
    x = deployment.parameter_openapi_schema["properties"]["x"]
    assert (x["default"], x["description"]) == (3, "how many")
    assert run(worker_api, client, pool, deployment, {}) == {"x": 3, "x_type": "int", "label": "a"}
    with pytest.raises(InvalidInput, match="label"):  # Field(max_length=5), enforced by the API
        new_run(client, deployment, parameters={"label": "far too long"})


def test_an_arbitrary_class_deploys_with_an_open_schema(worker_api: Any, setup: tuple[Any, str, Path]) -> None:
    client, pool, flows = setup
    deployment = deploy(client, pool, flows, "with_class")
    assert deployment.parameter_openapi_schema["properties"]["engine"] == {"title": "Engine"}
    assert run(worker_api, client, pool, deployment, {"engine": {"url": "db://"}}) == {
        "engine": {"url": "db://"}, "n": 1}


def test_var_args_and_var_kwargs_take_their_values_and_extra_parameters(
        worker_api: Any, setup: tuple[Any, str, Path]) -> None:
    client, pool, flows = setup
    deployment = deploy(client, pool, flows, "variadic")
    assert run(worker_api, client, pool, deployment, {"a": 1, "args": [2, 3], "ratio": 1, "kwargs": {"b": 2.5}}) == {
        "a": 1, "args": [2, 3], "kwargs": {"b": 2.5, "ratio": 1.0}, "kinds": ["float", "float"]}
    with pytest.raises(InvalidInput, match="ratio"):  # extra parameters must be what **kwargs says
        new_run(client, deployment, parameters={"a": 1, "ratio": "high"})


def test_enums_dates_and_keyword_only_parameters_are_coerced(worker_api: Any, setup: tuple[Any, str, Path]) -> None:
    client, pool, flows = setup
    deployment = deploy(client, pool, flows, "typed")
    assert run(worker_api, client, pool, deployment, {"color": "blue", "when": "2030-01-01T09:00:00+00:00"}) == {
        "color": "Color", "value": "blue", "hour": 9, "tz": "UTC", "day": "date"}
