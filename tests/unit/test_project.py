"""``orchestrator.yaml``: parsing, errors that name the file, the deployment and the field,
selection of deployments, and the request ``orch deploy`` sends (CLI flags over the file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.cli.project import Overrides, ProjectError, build_request, load_flow, load_project, select

FLOWS = textwrap.dedent('''
    from orchestrator import flow

    @flow(version="from-decorator")
    def add(x: int, y: int = 2) -> int:
        """Add two numbers."""
        return x + y

    @flow
    def other() -> None: ...

    def plain() -> None: ...
''')

FULL = textwrap.dedent('''
    pull:
      - git_clone: {id: clone, repository: "https://git.example.invalid/flows.git", branch: main}
    deployments:
      - name: sum
        entrypoint: flows.py:add
        parameters: {x: 1}
        schedules:
          - {cron: "0 3 * * *", timezone: Europe/Paris}
        work_pool: {name: local, work_queue_name: fast, job_variables: {env: {A: "1"}}}
        tags: [etl, nightly]
        version: 1.5
        description: Sums.
        concurrency_limit: 2
        paused: true
      - name: local-only
        entrypoint: flows.py:other
        work_pool: {name: local}
        pull: []
''')


def plain(schedules: list[Any]) -> list[Any]:
    """Schedules as the user wrote them, whether the request holds dicts or schedule models."""
    return [s.model_dump(exclude_defaults=True) if hasattr(s, "model_dump") else s for s in schedules]


def project(tmp_path: Path, text: str, flows: str = FLOWS) -> Path:
    (tmp_path / "orchestrator.yaml").write_text(text)
    (tmp_path / "flows.py").write_text(flows)
    return tmp_path


def test_a_full_file_is_read(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, FULL))

    first, second = loaded.deployments
    assert first.name == "sum" and first.entrypoint == "flows.py:add"
    assert first.version == "1.5"  # a YAML number is read as the text the user wrote
    assert first.work_pool.job_variables == {"env": {"A": "1"}}
    assert first.schedules == [{"cron": "0 3 * * *", "timezone": "Europe/Paris"}]
    assert loaded.pull_steps(first) == loaded.pull  # the project's steps
    assert loaded.pull_steps(second) == []  # its own (none)
    assert second.schedules is None and second.paused is None  # keys missing, not empty


def test_pull_steps_is_accepted_as_the_apis_name_for_pull(tmp_path: Path) -> None:
    text = "deployments:\n  - {name: a, entrypoint: 'f.py:a', pull_steps: [{set_working_directory: {directory: x}}]}\n"
    assert load_project(project(tmp_path, text)).deployments[0].pull == [{"set_working_directory": {"directory": "x"}}]


@pytest.mark.parametrize(("text", "message"), [
    ("deployments:\n  - name: a\n   bad: [", "orchestrator.yaml: line 3, column 4: not valid YAML"),
    ("- a\n- b\n", "orchestrator.yaml: expected a mapping"),
    ("deployments: []\n", "orchestrator.yaml: 'deployments' must be a non-empty list"),
    ("build: []\ndeployments: [{name: a, entrypoint: 'f.py:a'}]\n",
     "orchestrator.yaml: unknown top-level key(s) build (known: name, definitions, pull, deployments)"),
    ("deployments:\n  - name: sum\n    entrypoint: flows.py:add\n    work_pool: {nmae: local}\n",
     "orchestrator.yaml: deployment 'sum': field 'work_pool.nmae': unknown field"),
    ("deployments:\n  - name: sum\n", "orchestrator.yaml: deployment 'sum': field 'entrypoint': Field required"),
    ("deployments:\n  - entrypoint: flows.py:add\n", "orchestrator.yaml: deployment #1: field 'name': Field required"),
    ("deployments:\n  - {name: sum, entrypoint: flows.py}\n",
     "orchestrator.yaml: deployment 'sum': field 'entrypoint': String should match pattern"),
    ("deployments:\n  - {name: a/b, entrypoint: 'f.py:a'}\n", "deployment 'a/b': field 'name': String should match"),
    ("deployments:\n  - {name: sum, entrypoint: 'f.py:a', concurrency_limit: 0}\n",
     "deployment 'sum': field 'concurrency_limit': Input should be greater than or equal to 1"),
    ("deployments:\n  - {name: sum, entrypoint: 'f.py:a', tags: nightly}\n",
     "deployment 'sum': field 'tags': Input should be a valid list"),
    ("deployments:\n  - {name: sum, entrypoint: 'f.py:a', pull: [{git_clone: {branch: main}}]}\n",
     "orchestrator.yaml: deployment 'sum': field 'pull' step #1: git_clone: missing required input(s) repository"),
    ("pull: [{git_pull: {}}]\ndeployments:\n  - {name: sum, entrypoint: 'f.py:a'}\n",
     "orchestrator.yaml: the top-level 'pull' step #1: unknown pull step 'git_pull'"),
    ("deployments:\n  - {name: s, entrypoint: 'f.py:a', pull: [], pull_steps: []}\n",
     "deployment 's': give 'pull' or 'pull_steps', not both"),
])
def test_problems_name_the_file_the_deployment_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProjectError) as caught:
        load_project(project(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=f"no orchestrator.yaml in {tmp_path}"):
        load_project(tmp_path)


# --- selection ---------------------------------------------------------------------------------


def test_selection_by_name_all_or_the_only_one(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, FULL))
    assert [d.name for d in select(loaded, [], True)] == ["sum", "local-only"]
    assert [d.name for d in select(loaded, ["local-only"], False)] == ["local-only"]
    assert [d.name for d in select(loaded, ["add/sum", "sum"], False)] == ["sum"]
    with pytest.raises(ProjectError, match=r"has 2 deployments \(sum, local-only\); name the ones to deploy or pass --all"):
        select(loaded, [], False)
    with pytest.raises(ProjectError, match=r"no deployment 'nope' in orchestrator.yaml \(it has: sum, local-only\)"):
        select(loaded, ["nope"], False)
    with pytest.raises(ProjectError, match="names or --all, not both"):
        select(loaded, ["sum"], True)
    single = load_project(project(tmp_path, "deployments: [{name: one, entrypoint: 'flows.py:add'}]\n"))
    assert [d.name for d in select(single, [], False)] == ["one"]


# --- the entrypoint and the request ------------------------------------------------------------


@pytest.mark.usefixtures("isolated_imports")
def test_the_entrypoint_must_load_a_flow(tmp_path: Path) -> None:
    text = textwrap.dedent('''
        deployments:
          - {name: a, entrypoint: "flows.py:plain"}
          - {name: b, entrypoint: "flows.py:missing"}
          - {name: c, entrypoint: "nowhere.py:add"}
          - {name: d, entrypoint: "flows.py:add"}
    ''')
    loaded = load_project(project(tmp_path, text))
    a, b, c, d = loaded.deployments
    with pytest.raises(ProjectError, match="deployment 'a': field 'entrypoint': 'flows.py:plain' is a function, "
                                           "not a flow; decorate it with @flow"):
        load_flow(a, tmp_path)
    with pytest.raises(ProjectError, match="deployment 'b': field 'entrypoint': .*'missing' not found"):
        load_flow(b, tmp_path)
    with pytest.raises(ProjectError, match="deployment 'c': field 'entrypoint': .*nowhere.py not found"):
        load_flow(c, tmp_path)
    assert load_flow(d, tmp_path).name == "add"


@pytest.mark.usefixtures("isolated_imports")
def test_the_request_takes_the_file_and_the_flow(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, FULL))
    first, second = loaded.deployments

    request = build_request(loaded, first, load_flow(first, tmp_path), Overrides(), existing=None)
    assert request.flow_name == "add" and request.name == "sum"
    assert request.path is None  # the pull steps bring the code
    assert request.pull_steps == loaded.pull
    assert request.version == "1.5" and request.description == "Sums."
    assert request.paused is True and request.concurrency_limit == 2
    assert request.work_pool_name == "local" and request.work_queue_name == "fast"
    assert request.parameter_openapi_schema["required"] == ["x"]

    local = build_request(loaded, second, load_flow(second, tmp_path), Overrides(), existing=None)
    assert local.path == str(tmp_path.resolve())  # no pull steps: the code is here
    assert local.version == load_flow(second, tmp_path).source_hash()  # not a git work tree
    assert local.schedules == [] and local.paused is False  # new deployment, keys missing


@pytest.mark.usefixtures("isolated_imports")
def test_missing_schedules_and_paused_keep_the_servers(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, FULL))
    first, second = loaded.deployments
    existing = SimpleNamespace(schedules=[{"interval": 60}], paused=True)

    kept = build_request(loaded, second, load_flow(second, tmp_path), Overrides(), existing=existing)
    assert plain(kept.schedules) == [{"interval": 60}] and kept.paused is True
    stated = build_request(loaded, first, load_flow(first, tmp_path), Overrides(), existing=existing)
    assert plain(stated.schedules) == [{"cron": "0 3 * * *", "timezone": "Europe/Paris"}]
    empty = load_project(project(tmp_path, "deployments: [{name: s, entrypoint: 'flows.py:add', schedules: []}]\n"))
    spec = empty.deployments[0]
    assert build_request(empty, spec, load_flow(spec, tmp_path), Overrides(work_pool_name="p"),
                         existing=existing).schedules == []


@pytest.mark.usefixtures("isolated_imports")
def test_flags_override_the_file(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, FULL))
    first = loaded.deployments[0]
    overrides = Overrides(work_pool_name="other", work_queue_name="slow", parameters={"y": 5},
                          job_variables={"stream_output": False}, tags=["manual"], version="9", description="D",
                          schedules=[{"interval": 30.0}])

    request = build_request(loaded, first, load_flow(first, tmp_path), overrides, existing=None)
    assert (request.work_pool_name, request.work_queue_name) == ("other", "slow")
    assert request.parameters == {"x": 1, "y": 5}
    assert request.job_variables == {"env": {"A": "1"}, "stream_output": False}
    assert request.tags == ["manual"] and request.version == "9" and request.description == "D"
    assert plain(request.schedules) == [{"interval": 30.0}]


@pytest.mark.usefixtures("isolated_imports")
def test_defaults_come_from_the_decorator_and_the_docstring(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, "deployments: [{name: s, entrypoint: 'flows.py:add'}]\n"))
    spec = loaded.deployments[0]
    request = build_request(loaded, spec, load_flow(spec, tmp_path), Overrides(work_pool_name="p"), existing=None)
    assert request.version == "from-decorator"
    assert request.description == "Add two numbers."


@pytest.mark.usefixtures("isolated_imports")
def test_a_pool_is_required(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, "deployments: [{name: s, entrypoint: 'flows.py:add'}]\n"))
    spec = loaded.deployments[0]
    with pytest.raises(ProjectError, match=r"deployment 's': field 'work_pool.name' is missing \(or pass --pool, "
                                           r"or set ORCH_DEFAULT_WORK_POOL_NAME\)"):
        build_request(loaded, spec, load_flow(spec, tmp_path), Overrides(), existing=None)


@pytest.mark.usefixtures("isolated_imports")
def test_the_default_pool_setting_comes_after_the_flag_and_the_file(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, "deployments: [{name: s, entrypoint: 'flows.py:add'},"
                                            " {name: t, entrypoint: 'flows.py:add', work_pool: {name: filed}}]\n"))
    s, t = loaded.deployments
    flow = load_flow(s, tmp_path)

    def pool_of(spec: Any, **overrides: Any) -> str:
        return build_request(loaded, spec, flow, Overrides(**overrides), existing=None).work_pool_name

    assert pool_of(s, default_work_pool_name="dflt") == "dflt"
    assert pool_of(t, default_work_pool_name="dflt") == "filed"
    assert pool_of(t, work_pool_name="flag", default_work_pool_name="dflt") == "flag"


# --- the CLI, as typed (no server needed for these) ----------------------------------------------


# Schedules and paused given: `orch deploy` asks the server nothing before the request is built.
PINNED = "deployments: [{name: s, entrypoint: 'flows.py:add', work_pool: {name: p}, schedules: [], paused: false}]\n"


def orch_deploy(cwd: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: this checkout's code, not whichever one is installed.
    env: dict[str, Any] = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "ORCH_API_URL": "http://127.0.0.1:9/api",
                           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **env_vars}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "deploy", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_orch_deploy_takes_the_default_pool_setting(tmp_path: Path) -> None:
    (tmp_path / "orchestrator.yaml").write_text("deployments: [{name: s, entrypoint: 'flows.py:add', schedules: [],"
                                                " paused: false}]\n")
    (tmp_path / "flows.py").write_text(FLOWS)
    refused = orch_deploy(tmp_path)
    assert refused.returncode == 1
    assert refused.stderr == ("Error: orchestrator.yaml: deployment 's': field 'work_pool.name' is missing (or pass "
                              "--pool, or set ORCH_DEFAULT_WORK_POOL_NAME)\n")
    # With the setting, the request is built and sent (here to no server).
    sent = orch_deploy(tmp_path, ORCH_DEFAULT_WORK_POOL_NAME="default")
    assert sent.stderr.startswith("Error: deployment 'add/s': cannot reach the API"), sent.stderr


@pytest.mark.parametrize(("files", "args", "message"), [
    ({}, [], "Error: no orchestrator.yaml in"),
    ({"orchestrator.yaml": "deployments:\n  - {name: s, entrypoint: 'flows.py:add', work_pool: {name: 1}}\n"
      "  - {name: t, entrypoint: 'flows.py:add', work_pool: {name: p}, parameters: [1]}\n"},
     ["--all"], "Error: orchestrator.yaml: deployment 't': field 'parameters': Input should be a valid dictionary"),
    ({"orchestrator.yaml": FULL}, [], "Error: orchestrator.yaml has 2 deployments"),
    ({"orchestrator.yaml": "deployments: [{name: s, entrypoint: 'flows.py:nope'}]\n", "flows.py": FLOWS}, [],
     "Error: orchestrator.yaml: deployment 's': field 'entrypoint': entrypoint 'flows.py:nope': 'nope' not found"),
    ({"orchestrator.yaml": "deployments: [{name: s, entrypoint: 'flows.py:add'}]\n", "flows.py": FLOWS},
     ["--params", "[1]"], "Error: --params must be a JSON object"),
    ({"orchestrator.yaml": "deployments: [{name: s, entrypoint: 'flows.py:add', work_pool: {name: p}}]\n",
      "flows.py": FLOWS}, [], "Error: deployment 'add/s': cannot reach the API at http://127.0.0.1:9/api"),
    # --interval takes what `orch deployment schedule create --interval` takes, 0 included (refused, not
    # ignored, as the option parser refuses a value: exit 2); a schedule the check refuses is named once,
    # without pydantic's "Value error, ", and blamed on the option that gave it, not on the file.
    ({"orchestrator.yaml": PINNED, "flows.py": FLOWS}, ["--interval", "0"],
     "Error: Invalid value for '--interval': interval must be at least 1 second (got 0 s)"),
    ({"orchestrator.yaml": PINNED, "flows.py": FLOWS}, ["--interval", "5m"],
     "Error: deployment 'add/s': cannot reach the API at http://127.0.0.1:9/api"),
    ({"orchestrator.yaml": PINNED, "flows.py": FLOWS}, ["--cron", "61 * * * *"],
     "Error: --cron: schedule (cron '61 * * * *'): cron expression '61 * * * *' is not valid"),
])
def test_orch_deploy_errors_are_one_line(tmp_path: Path, files: dict[str, str], args: list[str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = orch_deploy(tmp_path, *args)
    assert done.returncode != 0
    assert done.stderr.startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.usefixtures("isolated_imports")
def test_a_package_module_entrypoint_is_imported_from_the_project(tmp_path: Path) -> None:
    package = tmp_path / "orch_test_pkg_xyz"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(FLOWS)
    loaded = load_project(project(tmp_path, "deployments: [{name: m, entrypoint: 'orch_test_pkg_xyz.jobs:add'}]\n"))
    spec = loaded.deployments[0]

    flow = load_flow(spec, tmp_path)
    request = build_request(loaded, spec, flow, Overrides(work_pool_name="p"), existing=None)
    assert flow.name == "add"
    assert request.entrypoint == "orch_test_pkg_xyz.jobs:add"
    assert request.path == str(tmp_path.resolve())


def test_concurrency_options_and_crash_retries_reach_the_deployment(tmp_path: Path) -> None:
    from orchestrator import schemas

    assert schemas.concurrency_fields(3) == {"concurrency_limit": 3}
    assert schemas.concurrency_fields({"limit": 2, "collision_strategy": "CANCEL_NEW"}) == {
        "concurrency_limit": 2, "concurrency_collision_strategy": "CANCEL_NEW"}
    assert schemas.concurrency_fields(None) == {"concurrency_limit": None}
    with pytest.raises(Exception, match="collision_strategy"):
        schemas.concurrency_fields({"limit": 2, "collision_strategy": "DROP"})
