"""``orchestrator.schemas`` serves each wire model from its module, imported at its first use (issue
22: the fork server every run is forked from held the validators of every resource's models)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import orchestrator.schemas


def test_every_exported_name_is_the_one_its_module_defines() -> None:
    homes = orchestrator.schemas._HOMES
    assert sorted(orchestrator.schemas.__all__) == sorted(homes)
    for name, module in homes.items():
        assert getattr(orchestrator.schemas, name) is getattr(importlib.import_module(f"orchestrator.schemas.{module}"), name)
    assert set(homes) <= set(dir(orchestrator.schemas))


def test_a_name_it_does_not_serve_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'FlowRunz'"):
        orchestrator.schemas.FlowRunz  # noqa: B018


def test_reading_a_flow_run_model_leaves_the_other_resources_unloaded() -> None:
    code = ("import json, sys; from orchestrator.schemas import FlowRun; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('orchestrator.schemas'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == ["orchestrator.schemas", "orchestrator.schemas.base",
                                       "orchestrator.schemas.deployments", "orchestrator.schemas.flow_runs",
                                       "orchestrator.schemas.schedules"]  # a run's: FlowRun holds its Deployment
