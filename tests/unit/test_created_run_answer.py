"""The create-run route's answer for a run it just wrote (``flow_runs.created_json``) is, byte for
byte, the ``FlowRun`` model's own JSON of that run (``to_schema(...).model_dump_json()``)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest

from orchestrator.server.services import flow_runs
from orchestrator.server.services.flow_runs import NewRun
from orchestrator.server.services.new_runs import direct_run_values, run_values

PARAMETERS: list[dict[str, Any]] = [
    {},
    {"big": 2**70, "small": -1, "zero": 0, "float": 0.1, "huge": 1e300, "tiny": 3.14159e-10, "neg0": -0.0,
     "whole": 1.0, "text": "é \u2028 \"q\" \\ {} \x01 </script> \U0001f600", "none": None, "flags": [True, False],
     "nested": {"a": [1, {"b": []}], "": {}}},
    {"nan": float("nan"), "inf": float("inf"), "minus_inf": float("-inf"), "in_list": [float("nan"), 2.5]},
]
ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-2))]


def runs() -> list[NewRun]:
    made = []
    for parameters, zone, micro, (version, tags, job_variables, key) in itertools.product(
            PARAMETERS, ZONES, [0, 1, 123456],
            [(None, [], {}, None), ("1.2", ["b", "a", "é", "b"], {"env": {"A": "1"}, "n": 2.5, "none": None}, "k\u00e9")]):
        when = dt.datetime(2030, 1, 2, 3, 4, 5, micro, tzinfo=zone)
        made.append(NewRun(**run_values(
            flow_id=uuid.uuid4(), deployment_id=uuid.uuid4(), deployment_version=version, work_pool_name="pool",
            work_queue_name="default", parameters=parameters, job_variables=job_variables, tags=tags,
            idempotency_key=key, expected_start_time=when, now=when - dt.timedelta(seconds=micro),
            dispatched_at=when if micro else None)))
    made.append(NewRun(**direct_run_values(flow_id=uuid.uuid4(), name="direct", parameters={"x": 1}, tags=["t"],
                                           now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), parent_task_run_id=uuid.uuid4())))
    return made


@pytest.mark.parametrize("run", runs())
def test_a_created_runs_answer_is_the_models_json(run: NewRun) -> None:
    assert flow_runs.created_json(run, None) == flow_runs.to_schema(run, None).model_dump_json()
