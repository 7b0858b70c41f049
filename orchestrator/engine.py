"""The flow-run process: ``python -m orchestrator.engine`` with ``ORCH_FLOW_RUN_ID`` set.

It loads the deployment's entrypoint, validates and coerces the parameters, reports RUNNING,
calls the flow, and reports COMPLETED (with a small JSON result) or FAILED (with the exception's
type and message). What the flow prints and logs reaches the API in batches. Any exit without a
final report is noticed by the worker that started this process.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.client import Client
from orchestrator.errors import InvalidInput, InvalidTransition, OrchestratorError
from orchestrator.logs import LogShipper, capture_output
from orchestrator.pull_steps import PullStepError, run_pull_steps
from orchestrator.settings import Settings
from orchestrator.states import StateType

log = logging.getLogger("orchestrator.engine")
RESULT_LIMIT = 16 * 1024


class EntrypointError(Exception):
    pass


def load_entrypoint(entrypoint: str, path: str | None) -> Callable[..., Any]:
    """``path/to/file.py:function`` (relative to ``path``) or ``package.module:function``."""
    target, sep, attribute = entrypoint.rpartition(":")
    if not sep or not target or not attribute:
        raise EntrypointError(f"entrypoint '{entrypoint}' must look like 'path/file.py:function'")
    base = Path(path or ".")
    if target.endswith(".py"):
        file = (base / target).resolve()
        if not file.is_file():
            raise EntrypointError(f"entrypoint '{entrypoint}': file {file} not found")
        sys.path.insert(0, str(file.parent))
        spec = importlib.util.spec_from_file_location(f"__orch_flow__.{file.stem}", file)
        if spec is None or spec.loader is None:
            raise EntrypointError(f"entrypoint '{entrypoint}': cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise EntrypointError(f"entrypoint '{entrypoint}': importing {file.name} failed: "
                                  f"{type(error).__name__}: {error}") from error
    else:
        sys.path.insert(0, str(base.resolve()))
        try:
            module = importlib.import_module(target)
        except Exception as error:
            raise EntrypointError(f"entrypoint '{entrypoint}': cannot import module '{target}': "
                                  f"{type(error).__name__}: {error}") from error
    obj: Any = module
    for part in attribute.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise EntrypointError(f"entrypoint '{entrypoint}': '{attribute}' not found in {target}")
    if not callable(obj):
        raise EntrypointError(f"entrypoint '{entrypoint}': '{attribute}' is not a function")
    return obj  # type: ignore[no-any-return]


def _jsonable(value: Any) -> tuple[Any, str | None]:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return None, f"result of type {type(value).__name__} is not JSON; not stored"
    if len(text) > RESULT_LIMIT:
        return None, f"result of {len(text)} bytes is larger than {RESULT_LIMIT}; not stored"
    return value, None


def execute(client: Client, run_id: uuid.UUID, shipper: LogShipper) -> int:
    """Run one flow run to a final state. Returns the process exit code."""
    def finish(state: StateType, message: str | None = None, result: Any = None) -> None:
        # Ship every line first, so whoever sees the final state also sees all the logs.
        sys.stdout.flush()
        sys.stderr.flush()
        shipper.flush()
        client.set_flow_run_state(run_id, state, message=message, result=result)

    run = client.read_flow_run(run_id)
    if run.deployment_id is None:
        finish(StateType.FAILED, "flow run has no deployment")
        return 1
    deployment = client.read_deployment(run.deployment_id)
    if deployment.pull_steps:  # fetch the code first; the entrypoint is then found where the steps leave us
        try:
            run_pull_steps(deployment.pull_steps)
        except PullStepError as error:
            log.error("%s", error)
            finish(StateType.FAILED, str(error))
            return 1
        deployment = deployment.model_copy(update={"path": None})
    if deployment.path and Path(deployment.path).is_dir():
        os.chdir(deployment.path)
    from orchestrator.flows import Flow
    from orchestrator.parameters import coerce_parameters

    try:
        target = load_entrypoint(deployment.entrypoint, deployment.path)
        fn = target.fn if isinstance(target, Flow) else target
        kwargs = coerce_parameters(fn, run.parameters)
    except (EntrypointError, InvalidInput) as error:
        log.error("%s", error)
        finish(StateType.FAILED, str(error))
        return 1
    try:
        client.set_flow_run_state(run_id, StateType.RUNNING)
    except InvalidTransition as error:  # cancelled meanwhile: do not start
        log.warning("not starting: %s", error)
        return 0
    try:
        value = fn(**kwargs)
    except BaseException as error:  # noqa: BLE001 - the flow's failure is the run's result
        log.error("flow run failed:\n%s", traceback.format_exc())
        message = f"{type(error).__name__}: {error}"
        finish(StateType.FAILED, message[:4000])
        return 1
    result, note = _jsonable(value)
    finish(StateType.COMPLETED, note, result)
    return 0


def main() -> int:
    settings = Settings()
    raw_id = os.environ.get("ORCH_FLOW_RUN_ID", "")
    try:
        run_id = uuid.UUID(raw_id)
    except ValueError:
        print(f"ORCH_FLOW_RUN_ID must be a flow run id, got {raw_id!r}", file=sys.stderr)
        return 2
    # Ride out an API restart for a while rather than crash the run.
    client = Client.from_settings(settings, retry_seconds=60.0)
    shipper = LogShipper(client, run_id)
    shipper.start()
    try:
        with capture_output(shipper):
            return execute(client, run_id, shipper)
    except OrchestratorError as error:
        print(f"flow run {run_id}: {error}", file=sys.stderr)
        return 1
    finally:
        shipper.stop()
        client.close()


if __name__ == "__main__":
    sys.exit(main())
