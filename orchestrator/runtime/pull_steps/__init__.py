"""Pull steps: how a flow-run process fetches a deployment's code before importing its entrypoint.

A deployment's ``pull_steps`` is a list of one-key mappings, as in Prefect's ``prefect.yaml``::

    - git_clone:
        id: clone
        repository: https://git.example.com/team/flows.git
        branch: main
        access_token: "{{ $GIT_TOKEN }}"
    - pip_install_requirements:
        directory: "{{ clone.directory }}"

Before a step runs, its inputs are rendered: ``{{ step_id.key }}`` is the output ``key`` of the
earlier step with that ``id``; ``{{ $NAME }}`` is the environment variable ``NAME`` of the flow-run
process. A value that is exactly one placeholder keeps the output's type; inside text it is
interpolated as a string.

The steps run in a fresh temporary directory (removed when the process exits). Afterwards the
process works in the ``directory`` output of the last step that has one (``git_clone`` and
``set_working_directory`` do), and the entrypoint is resolved there.

Only the standard library is imported here and in the step modules: the API server validates pull
steps with this package and every flow-run process imports it. This module validates and runs the
steps; ``git.py`` holds ``git_clone`` and its credential handling, ``steps.py`` the other steps and
the subprocess plumbing they share.
"""

from __future__ import annotations

import atexit
import inspect
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.runtime.pull_steps.git import git_clone
from orchestrator.runtime.pull_steps.steps import (
    StepFailed,
    pip_install_requirements,
    run_shell_script,
    set_working_directory,
)

PLACEHOLDER = re.compile(r"\{\{\s*(\$?[\w.\-]+)\s*\}\}")
STEP_ID = re.compile(r"^[\w\-]+$")


class PullStepError(OrchestratorError):
    """A pull step could not run or failed; the message names the step and ends with the tail of
    its error output."""

    code = "pull_step_error"

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"pull step {step} failed: {detail}")
        self.step = step


# --- the steps (git.py: git_clone; steps.py: the others) ----------------------------------------


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "git_clone": git_clone,
    "set_working_directory": set_working_directory,
    "run_shell_script": run_shell_script,
    "pip_install_requirements": pip_install_requirements,
}
# Fully qualified spellings, so a step copied from a prefect.yaml works unchanged.
ALIASES = {
    **{f"orchestrator.pull_steps.{name}": name for name in STEPS},
    **{f"prefect.deployments.steps.{name}": name for name in STEPS},
    "prefect.deployments.steps.pull.git_clone": "git_clone",
    "prefect.deployments.steps.pull.set_working_directory": "set_working_directory",
    "prefect.deployments.steps.utility.run_shell_script": "run_shell_script",
    "prefect.deployments.steps.utility.pip_install_requirements": "pip_install_requirements",
}


# --- validation (server side and `orch deploy`) ------------------------------------------------


def check_pull_steps(steps: Any) -> list[tuple[int | None, str]]:
    """Every problem of ``steps`` as ``(index, message)``; empty when they are well formed.
    Placeholders are not resolved here (they need the flow-run process's environment)."""
    if not isinstance(steps, list):
        return [(None, f"pull steps must be a list, got {type(steps).__name__}")]
    problems: list[tuple[int | None, str]] = []
    ids: set[str] = set()
    for index, step in enumerate(steps):
        try:
            name, inputs = _parse(step)
        except ValueError as error:
            problems.append((index, str(error)))
            continue
        step_id = inputs.get("id")
        if step_id is not None:
            if not isinstance(step_id, str) or not STEP_ID.match(step_id):
                problems.append((index, f"{name}: id must be letters, digits, '_' or '-', got {step_id!r}"))
            elif step_id in ids:
                problems.append((index, f"{name}: id '{step_id}' is used by an earlier step"))
            else:
                ids.add(step_id)
        parameters = inspect.signature(STEPS[name]).parameters
        unknown = sorted(set(inputs) - set(parameters) - {"id"})
        if unknown:
            known = ", ".join(parameters)
            problems.append((index, f"{name}: unknown input(s) {', '.join(unknown)} (known: {known})"))
        missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in inputs]
        if missing:
            problems.append((index, f"{name}: missing required input(s) {', '.join(missing)}"))
        if name == "git_clone" and inputs.get("branch") and inputs.get("commit_sha"):
            problems.append((index, "git_clone: give either branch or commit_sha, not both"))
    return problems


def _parse(step: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(step, Mapping) or len(step) != 1:
        raise ValueError(f"a pull step is a mapping with one key (the step's name), got {step!r}"[:300])
    (raw_name, inputs), = step.items()
    name = ALIASES.get(str(raw_name), str(raw_name))
    if name not in STEPS:
        raise ValueError(f"unknown pull step '{raw_name}' (known: {', '.join(STEPS)})")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise ValueError(f"{name}: inputs must be a mapping, got {type(inputs).__name__}")  # noqa: TRY004 - a user error, reported like the others
    return name, dict(inputs)


# --- running -----------------------------------------------------------------------------------


def run_pull_steps(steps: list[dict[str, Any]], *, environ: Mapping[str, str] | None = None,
                   workdir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Run ``steps`` in order, starting in ``workdir`` (default: a fresh temporary directory removed
    at exit), and leave the process in the ``directory`` output of the last step that has one.
    Returns each identified step's outputs by id. Raises ``PullStepError`` naming the step."""
    problems = check_pull_steps(steps)
    if problems:
        index, message = problems[0]
        raise PullStepError(f"#{(index or 0) + 1}", message)
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="orch-run-")
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    os.chdir(workdir)
    environ = os.environ if environ is None else environ
    outputs: dict[str, dict[str, Any]] = {}
    final_directory: str | None = None
    for index, step in enumerate(steps):
        name, inputs = _parse(step)
        step_id = inputs.pop("id", None)
        label = f"{name} ({step_id})" if step_id else name
        try:
            rendered = _render(inputs, outputs, environ)
        except KeyError as error:
            raise PullStepError(label, str(error.args[0])) from None
        print(f"pull step {index + 1}/{len(steps)}: {label}", flush=True)
        try:
            result = STEPS[name](**rendered)
        except StepFailed as error:
            raise PullStepError(label, str(error)) from None
        except (OSError, TypeError, ValueError) as error:
            raise PullStepError(label, f"{type(error).__name__}: {error}") from None
        if step_id:
            outputs[step_id] = result
        if result.get("directory"):
            final_directory = result["directory"]
    if final_directory is not None:
        os.chdir(final_directory)
    return outputs


def _render(node: Any, outputs: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _render(value, outputs, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [_render(value, outputs, environ) for value in node]
    if not isinstance(node, str):
        return node
    whole = PLACEHOLDER.fullmatch(node.strip())
    if whole:
        return _lookup(whole.group(1), outputs, environ)
    return PLACEHOLDER.sub(lambda m: _text(_lookup(m.group(1), outputs, environ)), node)


def _lookup(reference: str, outputs: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]) -> Any:
    if reference.startswith("$"):
        variable = environ.get(reference[1:])
        if variable is None:
            raise KeyError(f"environment variable {reference[1:]} (from '{{{{ {reference} }}}}') is not set")
        return variable
    step_id, _, key = reference.partition(".")
    if step_id not in outputs:
        known = ", ".join(outputs) or "none yet"
        raise KeyError(f"'{{{{ {reference} }}}}' names no earlier step with id '{step_id}' (ids so far: {known})")
    value: Any = outputs[step_id]
    for part in key.split(".") if key else []:
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"'{{{{ {reference} }}}}': step '{step_id}' has no output '{key}' "
                           f"(it has: {', '.join(outputs[step_id])})")
        value = value[part]
    return value


def _text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)
