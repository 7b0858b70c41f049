"""The project file, ``orchestrator.yaml`` in the working directory, read by ``orch deploy``.

::

    pull:                         # default pull steps of every deployment below (optional)
      - git_clone: {repository: https://git.example.com/team/flows.git, branch: main}
    deployments:
      - name: nightly
        entrypoint: flows/etl.py:etl          # or package.module:function
        parameters: {day: today}
        schedules: [{cron: "0 3 * * *", timezone: Europe/Paris}]
        work_pool: {name: local, work_queue_name: default, job_variables: {env: {A: "1"}}}
        tags: [etl]
        version: "1.4"
        description: Nightly load.
        concurrency_limit: 1
        paused: false
        pull: [...]                           # replaces the top-level pull steps; [] for none

A missing ``schedules`` (or ``paused``) key leaves what the server has for that deployment as it
is (a new deployment starts with none / not paused); ``schedules: []`` removes every schedule.
Every problem is reported as one line naming the file, the deployment and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from orchestrator.cli.output import own_words
from orchestrator.errors import OrchestratorError
from orchestrator.schemas import ConcurrencyOptions, concurrency_fields

PROJECT_FILE = "orchestrator.yaml"
TOP_LEVEL_KEYS = ("name", "definitions", "pull", "deployments")


class ProjectError(OrchestratorError):
    """The project file is missing, unreadable or wrong; the message says where."""

    code = "project_error"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class WorkPoolSpec(_Spec):
    name: str | None = Field(None, min_length=1)
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentSpec(_Spec):
    name: str = Field(min_length=1, pattern=r"^[^/%&><]+$")
    entrypoint: str = Field(min_length=1, pattern=r"^.+:[\w.]+$")
    description: str | None = None
    version: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    enforce_parameter_schema: bool = True
    schedules: list[dict[str, Any]] | None = None  # None: the key is missing
    triggers: list[dict[str, Any]] = Field(default_factory=list)
    work_pool: WorkPoolSpec = Field(default_factory=lambda: WorkPoolSpec())
    pull: list[dict[str, Any]] | None = None  # None: the project's pull steps
    concurrency_limit: int | ConcurrencyOptions | None = None
    crash_retries: int = Field(0, ge=0, le=100)
    paused: bool | None = None  # None: the key is missing

    @field_validator("concurrency_limit")
    @classmethod
    def _positive_limit(cls, value: int | ConcurrencyOptions | None) -> int | ConcurrencyOptions | None:
        if isinstance(value, int) and value < 1:
            raise PydanticCustomError("greater_than_equal", "Input should be greater than or equal to 1")
        return value


class Project(BaseModel):
    file: Path
    pull: list[dict[str, Any]] = Field(default_factory=list)
    deployments: list[DeploymentSpec]

    def pull_steps(self, deployment: DeploymentSpec) -> list[dict[str, Any]]:
        return self.pull if deployment.pull is None else deployment.pull


def load_project(directory: Path | None = None) -> Project:
    """Read and check ``orchestrator.yaml`` in ``directory`` (default: the working directory)."""
    file = (directory or Path(os.getcwd())) / PROJECT_FILE
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise ProjectError("reading orchestrator.yaml needs PyYAML: pip install pyyaml") from None
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ProjectError(f"no {PROJECT_FILE} in {file.parent}; write one (see docs/deployments.md) "
                           "or run `orch deploy` from the project's folder") from None
    except OSError as error:
        raise ProjectError(f"{PROJECT_FILE}: cannot read it: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ProjectError(f"{PROJECT_FILE}: {where}not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{PROJECT_FILE}: expected a mapping with a 'deployments' list at the top")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ProjectError(f"{PROJECT_FILE}: unknown top-level key(s) {', '.join(map(str, unknown))} "
                           f"(known: {', '.join(TOP_LEVEL_KEYS)})")
    raw_deployments = data.get("deployments")
    if not isinstance(raw_deployments, list) or not raw_deployments:
        raise ProjectError(f"{PROJECT_FILE}: 'deployments' must be a non-empty list")
    pull = data.get("pull") or []
    _check_steps(pull, "the top-level 'pull'")
    deployments = [_deployment(index, raw) for index, raw in enumerate(raw_deployments)]
    for spec in deployments:
        if spec.pull is not None:
            _check_steps(spec.pull, f"deployment '{spec.name}': field 'pull'")
    return Project(file=file, pull=pull, deployments=deployments)


def _deployment(index: int, raw: Any) -> DeploymentSpec:
    label = f"deployment #{index + 1}"
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        label = f"deployment '{raw['name']}'"
    if isinstance(raw, dict) and "pull_steps" in raw:  # the API's name for the same thing
        if "pull" in raw:
            raise ProjectError(f"{PROJECT_FILE}: {label}: give 'pull' or 'pull_steps', not both")
        raw = {**raw, "pull": raw["pull_steps"]}
        del raw["pull_steps"]
    try:
        return DeploymentSpec.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"]) or "?"
            message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
            problems.append(f"field '{field}': {message}")
        raise ProjectError(f"{PROJECT_FILE}: {label}: {'; '.join(problems)}") from None


def _check_steps(steps: Any, where: str) -> None:
    from orchestrator.runtime.pull_steps import check_pull_steps

    problems = check_pull_steps(steps)
    if problems:
        index, message = problems[0]
        at = "" if index is None else f" step #{index + 1}"
        raise ProjectError(f"{PROJECT_FILE}: {where}{at}: {message}")


def select(project: Project, names: list[str], everything: bool) -> list[DeploymentSpec]:
    """The deployments ``orch deploy`` was asked for: by name (``name`` or ``flow/name``), all, or
    the only one in the file."""
    if everything:
        if names:
            raise ProjectError("give deployment names or --all, not both")
        return list(project.deployments)
    available = ", ".join(d.name for d in project.deployments)
    if not names:
        if len(project.deployments) == 1:
            return list(project.deployments)
        raise ProjectError(f"{PROJECT_FILE} has {len(project.deployments)} deployments ({available}); "
                           "name the ones to deploy or pass --all")
    chosen: list[DeploymentSpec] = []
    for name in names:
        short = name.rpartition("/")[2]
        matches = [d for d in project.deployments if d.name == short]
        if not matches:
            raise ProjectError(f"no deployment '{name}' in {PROJECT_FILE} (it has: {available})")
        chosen += [d for d in matches if d not in chosen]
    return chosen


def load_flow(spec: DeploymentSpec, directory: Path) -> Any:
    """Import the deployment's entrypoint from ``directory`` and return the flow it names."""
    from orchestrator.runtime.entrypoint import EntrypointError, load_entrypoint
    from orchestrator.sdk.flows import Flow

    try:
        found = load_entrypoint(spec.entrypoint, str(directory))
    except EntrypointError as error:
        raise ProjectError(f"{PROJECT_FILE}: deployment '{spec.name}': field 'entrypoint': {error}") from None
    if not isinstance(found, Flow):
        kind = "a function" if callable(found) else type(found).__name__
        raise ProjectError(f"{PROJECT_FILE}: deployment '{spec.name}': field 'entrypoint': '{spec.entrypoint}' "
                           f"is {kind}, not a flow; decorate it with @flow")
    return found


class Overrides(BaseModel):
    """``orch deploy`` flags; each one set wins over the file for every deployment deployed."""

    work_pool_name: str | None = None
    default_work_pool_name: str | None = None  # ORCH_DEFAULT_WORK_POOL_NAME: used when neither flag nor file names one
    work_queue_name: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)  # merged over the file's, key by key
    job_variables: dict[str, Any] = Field(default_factory=dict)  # merged over the file's, key by key
    tags: list[str] | None = None  # replace the file's
    version: str | None = None
    description: str | None = None
    schedules: list[dict[str, Any]] | None = None  # replace the file's


def build_request(project: Project, spec: DeploymentSpec, flow: Any, overrides: Overrides,
                  existing: Any | None) -> Any:
    """The ``DeploymentCreate`` for ``spec``; ``existing`` is the server's deployment of the same
    flow and name (or None), whose schedules and pause state a missing key keeps."""
    from orchestrator import schemas
    from orchestrator.parameters import parameter_schema

    pool = overrides.work_pool_name or spec.work_pool.name or overrides.default_work_pool_name
    if not pool:
        raise ProjectError(f"{PROJECT_FILE}: deployment '{spec.name}': field 'work_pool.name' is missing "
                           "(or pass --pool, or set ORCH_DEFAULT_WORK_POOL_NAME)")
    steps = project.pull_steps(spec)
    if overrides.schedules is not None:
        schedules = overrides.schedules
    elif spec.schedules is not None:
        schedules = spec.schedules
    else:
        schedules = list(existing.schedules) if existing is not None else []
    paused = spec.paused if spec.paused is not None else bool(existing.paused) if existing is not None else False
    try:
        return schemas.DeploymentCreate(
            flow_name=flow.name,
            name=spec.name,
            entrypoint=spec.entrypoint,
            # With pull steps the code comes from them: the entrypoint is relative to where they leave
            # the run, not to this folder (which the worker's machine may not have).
            path=None if steps else str(project.file.parent.resolve()),
            parameters={**spec.parameters, **overrides.parameters},
            parameter_openapi_schema=parameter_schema(flow.fn),
            enforce_parameter_schema=spec.enforce_parameter_schema,
            schedules=schedules,
            paused=paused,
            triggers=spec.triggers,
            version=overrides.version or spec.version or flow.version or flow.default_version(),
            description=overrides.description or spec.description or flow.description,
            tags=spec.tags if overrides.tags is None else overrides.tags,
            work_pool_name=pool,
            work_queue_name=overrides.work_queue_name or spec.work_pool.work_queue_name,
            job_variables={**spec.work_pool.job_variables, **overrides.job_variables},
            pull_steps=steps,
            crash_retries=spec.crash_retries,
            **concurrency_fields(spec.concurrency_limit),
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {own_words(e['msg'])}"
                             for e in error.errors())
        raise ProjectError(f"{PROJECT_FILE}: deployment '{spec.name}': {problems}") from None
