"""Deployment semantics on a live API over SQLite and PostgreSQL: job variables checked against
the pool's schema, the per-run parameter-schema opt-out, tag filters, pull steps refused or run by
a real flow-run process, and what ``Flow.deploy`` computes (version, description, entrypoint)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator import schemas
from orchestrator.errors import Conflict, DeploymentError, InvalidInput
from orchestrator.states import StateType

pytestmark = pytest.mark.integration

INT_X = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": False}
STRICT_TEMPLATE = {
    "job_configuration": {"image": "{{ image }}", "env": "{{ env }}"},
    "variables": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}}}},
}


def pool(client: Any, name: str = "local", template: dict[str, Any] | None = None) -> None:
    try:
        client.create_work_pool(schemas.WorkPoolCreate(name=name, type="process", base_job_template=template))
    except Conflict:
        pass


def deployment(client: Any, **fields: Any) -> schemas.Deployment:
    values: dict[str, Any] = {"flow_name": "add", "name": "sum", "entrypoint": "flows.py:add",
                              "work_pool_name": "local"}
    values.update(fields)
    return client.upsert_deployment(schemas.DeploymentCreate(**values))


def detail_of(error: pytest.ExceptionInfo[InvalidInput]) -> list[dict[str, Any]]:
    detail = error.value.detail
    assert isinstance(detail, list), detail
    return detail


# --- job variables against the pool's variables schema -------------------------------------------


def test_deployment_job_variables_of_the_wrong_type_are_refused_naming_them(api: Any) -> None:
    client = api.client()
    pool(client)
    with pytest.raises(InvalidInput) as caught:
        deployment(client, job_variables={"stream_output": "yes", "env": {"A": 1}})

    items = detail_of(caught)
    assert {tuple(i["loc"]) for i in items} == {("body", "job_variables", "stream_output"),
                                                ("body", "job_variables", "env", "A")}
    assert any("job variable 'stream_output': 'yes' is not of type 'boolean'" == i["msg"] for i in items), items


def test_a_misspelt_job_variable_is_refused_listing_the_real_ones(api: Any) -> None:
    client = api.client()
    pool(client)
    status, body = api.raw("POST", "/deployments", {
        "flow_name": "add", "name": "sum", "entrypoint": "flows.py:add", "work_pool_name": "local",
        "job_variables": {"enviroment": {"A": "1"}}})

    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "job_variables", "enviroment"]
    assert "job variable 'enviroment' is not a variable of work pool 'local'" in body["detail"][0]["msg"]
    assert "env" in body["detail"][0]["msg"]


def test_a_pool_that_allows_extra_variables_accepts_them(api: Any) -> None:
    client = api.client()
    pool(client, "open", {"job_configuration": {"x": "{{ x }}"},
                          "variables": {"type": "object", "additionalProperties": True}})
    assert deployment(client, work_pool_name="open", job_variables={"anything": 1}).job_variables == {"anything": 1}


def test_required_variables_may_come_from_the_deployment_or_the_run(api: Any) -> None:
    client = api.client()
    pool(client, "strict", STRICT_TEMPLATE)
    without = deployment(client, name="no-image", work_pool_name="strict")  # a deployment may leave it to runs

    with pytest.raises(InvalidInput) as caught:
        client.create_flow_run(without.id, schemas.FlowRunCreate())
    assert detail_of(caught)[0]["loc"] == ["body", "job_variables", "image"]
    assert "job variable 'image' is required by work pool 'strict'" in detail_of(caught)[0]["msg"]

    run = client.create_flow_run(without.id, schemas.FlowRunCreate(job_variables={"image": "python:3.12"}))
    assert run.job_variables == {"image": "python:3.12"}
    with_image = deployment(client, name="image", work_pool_name="strict", job_variables={"image": "a"})
    assert client.create_flow_run(with_image.id, schemas.FlowRunCreate()).state.type == StateType.SCHEDULED


def test_run_job_variables_are_checked_merged_with_the_deployments(api: Any) -> None:
    client = api.client()
    pool(client)
    d = deployment(client, job_variables={"env": {"A": "1"}})
    with pytest.raises(InvalidInput) as caught:
        client.create_flow_run(d.id, schemas.FlowRunCreate(job_variables={"env": {"B": 2}}))
    assert detail_of(caught)[0]["loc"] == ["body", "job_variables", "env", "B"]

    # None unsets a variable: it is not checked against the schema.
    run = client.create_flow_run(d.id, schemas.FlowRunCreate(job_variables={"command": None, "env": {"B": "2"}}))
    assert run.job_variables == {"command": None, "env": {"B": "2"}}


def test_updating_a_deployment_checks_its_job_variables_too(api: Any) -> None:
    client = api.client()
    pool(client)
    pool(client, "strict", STRICT_TEMPLATE)
    d = deployment(client, job_variables={"working_dir": "/tmp"})
    with pytest.raises(InvalidInput, match="working_dir"):
        client.update_deployment(d.id, schemas.DeploymentUpdate(work_pool_name="strict"))
    with pytest.raises(InvalidInput, match="stream_output"):
        client.update_deployment(d.id, schemas.DeploymentUpdate(job_variables={"stream_output": 3}))
    moved = client.update_deployment(d.id, schemas.DeploymentUpdate(work_pool_name="strict",
                                                                    job_variables={"image": "x"}))
    assert moved.work_pool_name == "strict"


# --- parameters --------------------------------------------------------------------------------


def test_a_run_can_opt_out_of_the_parameter_schema(api: Any) -> None:
    client = api.client()
    pool(client)
    d = deployment(client, parameter_openapi_schema=INT_X, parameters={"x": 1})

    with pytest.raises(InvalidInput, match="parameter 'x'"):
        client.create_flow_run(d.id, schemas.FlowRunCreate(parameters={"x": "abc"}))
    run = client.create_flow_run(d.id, schemas.FlowRunCreate(parameters={"x": "abc"}, enforce_parameter_schema=False))
    assert run.parameters == {"x": "abc"}

    lax = deployment(client, name="lax", parameter_openapi_schema=INT_X, enforce_parameter_schema=False)
    assert client.create_flow_run(lax.id, schemas.FlowRunCreate(parameters={"x": "abc"})).parameters == {"x": "abc"}
    with pytest.raises(InvalidInput, match="parameter 'x'"):
        client.create_flow_run(lax.id, schemas.FlowRunCreate(parameters={"x": "abc"}, enforce_parameter_schema=True))


def test_runs_carry_the_deployments_version_and_tags_plus_their_own(api: Any) -> None:
    client = api.client()
    pool(client)
    d = deployment(client, version="v7", tags=["etl", "team-a"])
    run = client.create_flow_run(d.id, schemas.FlowRunCreate(tags=["manual", "etl"]))
    assert run.deployment_version == "v7"
    assert run.tags == ["etl", "manual", "team-a"]
    assert [r.id for r in client.list_flow_runs(tag="manual").items] == [run.id]


# --- tags --------------------------------------------------------------------------------------


def test_deployments_filter_by_tag_before_paging(api: Any) -> None:
    client = api.client()
    pool(client)
    for name, tags in (("a", ["x"]), ("b", ["nightly"]), ("c", []), ("d", ["nightly", "x"])):
        deployment(client, name=name, tags=tags)

    assert [d.name for d in client.list_deployments(tag="nightly")] == ["b", "d"]
    assert [d.name for d in client.list_deployments(tag="nightly", limit=1)] == ["b"]
    assert [d.name for d in client.list_deployments(tag="nightly", offset=1, limit=1)] == ["d"]
    assert client.list_deployments(tag="nope") == []


# --- pull steps --------------------------------------------------------------------------------


def test_malformed_pull_steps_are_refused_naming_the_step(api: Any) -> None:
    client = api.client()
    pool(client)
    with pytest.raises(InvalidInput) as caught:
        deployment(client, pull_steps=[{"git_clone": {"repository": "x"}}, {"git_pul": {}}])
    item = detail_of(caught)[0]
    assert item["loc"] == ["body", "pull_steps", 1]
    assert item["msg"].startswith("pull step #2 unknown pull step 'git_pul'")

    d = deployment(client, pull_steps=[{"git_clone": {"repository": "x"}}])
    with pytest.raises(InvalidInput, match="missing required input"):
        client.update_deployment(d.id, schemas.DeploymentUpdate(pull_steps=[{"set_working_directory": {}}]))


FLOW_CODE = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def greet(who: str = "world") -> str:
        return "{origin}: hello " + who
''')


@pytest.fixture
def code_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "flows").mkdir()
    (repo / "flows" / "greet.py").write_text(FLOW_CODE.format(origin="repo"))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "flows"]):
        subprocess.run(["git", *argv], cwd=repo, env=env, check=True, capture_output=True)
    return repo


def run_engine(api: Any, run_id: uuid.UUID, cwd: Path) -> subprocess.CompletedProcess[str]:
    api.client().claim_flow_run(run_id, "test-worker")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}, "ORCH_FLOW_RUN_ID": str(run_id),
           "ORCH_API_URL": api.url, "ORCH_WORKER_NAME": "test-worker"}
    return subprocess.run([sys.executable, "-m", "orchestrator.engine"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=90, check=False)


def test_the_flow_run_process_runs_pull_steps_before_importing(api: Any, code_repo: Path, tmp_path: Path) -> None:
    client = api.client()
    pool(client)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    d = deployment(client, flow_name="greet", name="from-git", entrypoint="flows/greet.py:greet", path=None,
                   pull_steps=[{"git_clone": {"id": "clone", "repository": str(code_repo), "branch": "main"}},
                               {"run_shell_script": {"script": "test -f flows/greet.py && echo found-it",
                                                     "directory": "{{ clone.directory }}"}}])
    run = client.create_flow_run(d.id, schemas.FlowRunCreate(parameters={"who": "git"}))

    done = run_engine(api, run.id, elsewhere)

    final = client.read_flow_run(run.id)
    assert final.state.type == StateType.COMPLETED, (final.state, done.stderr)
    assert final.result == "repo: hello git"
    logs = "\n".join(log.message for log in client.read_logs(run.id))
    assert "pull step 1/2: git_clone (clone)" in logs and "found-it" in logs
    assert list(elsewhere.iterdir()) == []  # the clone went to a temporary folder


def test_a_failing_pull_step_fails_the_run_with_its_name_and_output(api: Any, code_repo: Path, tmp_path: Path) -> None:
    client = api.client()
    pool(client)
    d = deployment(client, flow_name="greet", name="broken", entrypoint="flows/greet.py:greet",
                   pull_steps=[{"git_clone": {"repository": str(code_repo)}},
                               {"run_shell_script": {"id": "check", "script": "echo checking; echo 'no luck' >&2; exit 4"}}])
    run = client.create_flow_run(d.id, schemas.FlowRunCreate())

    done = run_engine(api, run.id, tmp_path)

    final = client.read_flow_run(run.id)
    assert done.returncode == 1
    assert final.state.type == StateType.FAILED
    assert final.state.message == "pull step run_shell_script (check) failed: no luck"
    assert final.start_time is None  # it never started running


# --- what Flow.deploy computes -----------------------------------------------------------------


DOCUMENTED = textwrap.dedent('''
    import enum
    from pydantic import BaseModel
    from orchestrator import flow

    class Mode(enum.Enum):
        FAST = "fast"
        SAFE = "safe"

    class Target(BaseModel):
        table: str
        rows: int = 0

    @flow
    def load(target: Target, mode: Mode = Mode.SAFE, days: list[int] | None = None) -> None:
        """Load a table.

        Args:
            target: Where the rows go.
            mode: How careful to be.
            days: Which days to load;
                all when empty.
        """

    job = flow(name="renamed")(lambda: None)
''')


@pytest.fixture
def flow_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: Any, isolated_modules: None) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "documented.py").write_text(DOCUMENTED)
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("ORCH_API_URL", api.url)
    pool(api.client())
    return project


@pytest.fixture
def isolated_modules() -> Any:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_flow_deploy_schema_description_and_source_hash_version(flow_project: Path, api: Any) -> None:
    import documented  # type: ignore[import-not-found]

    deployment_id = documented.load.deploy("nightly", "local")

    d = api.client().read_deployment(deployment_id)
    properties = d.parameter_openapi_schema["properties"]
    assert properties["target"]["description"] == "Where the rows go."
    assert properties["days"]["description"] == "Which days to load; all when empty."
    assert properties["mode"]["default"] == "safe"
    assert d.description.startswith("Load a table.")
    assert d.version == documented.load.source_hash()  # not in a git work tree
    assert d.entrypoint == "documented.py:load"


def test_flow_deploy_version_is_the_short_git_commit(flow_project: Path, api: Any) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(["git", *argv], cwd=flow_project, env=env, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=flow_project, capture_output=True,
                            text=True, check=True).stdout.strip()
    import documented  # type: ignore[import-not-found]

    d = api.client().read_deployment(documented.load.deploy("nightly", "local"))
    assert d.version == commit
    again = api.client().read_deployment(documented.load.deploy("nightly", "local", version="1.0"))
    assert again.version == "1.0" and again.id == d.id


def test_flow_deploy_refuses_an_entrypoint_that_finds_another_object(flow_project: Path) -> None:
    (flow_project / "shadowed.py").write_text(textwrap.dedent('''
        from orchestrator import flow

        def work() -> int:
            return 1

        unbound = flow(work)  # bound to no name the entrypoint could use... except this one
        hidden = [flow(name="hidden")(work)]
    '''))
    import shadowed  # type: ignore[import-not-found]

    assert shadowed.unbound.entrypoint()[0] == "shadowed.py:unbound"  # the bound name, not 'work'
    with pytest.raises(DeploymentError) as caught:
        shadowed.hidden[0].deploy("x", "local")
    assert str(caught.value) == ("entrypoint 'shadowed.py:work' does not load flow 'hidden': it finds function "
                                 "'work', not a flow; bind the flow to a module-level name")


def test_flow_deploy_with_pull_steps_leaves_the_path_to_them(flow_project: Path, api: Any) -> None:
    import documented  # type: ignore[import-not-found]

    steps = [{"git_clone": {"repository": "https://git.example.invalid/flows.git"}}]
    d = api.client().read_deployment(documented.load.deploy("pulled", "local", pull_steps=steps))
    assert d.path is None and d.pull_steps == steps
    assert api.client().read_deployment(documented.load.deploy("here", "local")).path == str(flow_project.resolve())


def test_flow_deploy_without_a_pool_takes_the_default_pool_setting(flow_project: Path, api: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """As Prefect's PREFECT_DEFAULT_WORK_POOL_NAME: no ``work_pool_name``, the setting's pool; neither,
    an error naming both (and nothing sent)."""
    import documented  # type: ignore[import-not-found]

    monkeypatch.delenv("ORCH_DEFAULT_WORK_POOL_NAME", raising=False)
    with pytest.raises(DeploymentError, match="pass work_pool_name=... or set ORCH_DEFAULT_WORK_POOL_NAME"):
        documented.load.deploy("pool-less")
    monkeypatch.setenv("ORCH_DEFAULT_WORK_POOL_NAME", "local")
    assert api.client().read_deployment(documented.load.deploy("pool-less")).work_pool_name == "local"
    pool(api.client(), "other")
    assert api.client().read_deployment(documented.load.deploy("pool-less", "other")).work_pool_name == "other"


def test_flow_deploy_image_is_the_image_job_variable_of_a_container_pool(flow_project: Path, api: Any) -> None:
    import documented  # type: ignore[import-not-found]

    client = api.client()
    client.create_work_pool(schemas.WorkPoolCreate(name="boxes", type="docker"))
    d = client.read_deployment(documented.load.deploy("boxed", "boxes", image="repo/flows:1.0",
                                                      job_variables={"env": {"A": "1"}}))
    assert d.job_variables == {"env": {"A": "1"}, "image": "repo/flows:1.0"}


def test_flow_deploy_image_on_a_process_pool_is_refused_naming_it(flow_project: Path) -> None:
    import documented  # type: ignore[import-not-found]

    with pytest.raises(InvalidInput) as caught:
        documented.load.deploy("boxed", "local", image="repo/flows:1.0")
    assert "job variable 'image' is not a variable of work pool 'local'" in str(caught.value.detail)


@pytest.mark.parametrize(("options", "message"), [
    ({"build": True}, "deploy() does not build images"),
    ({"image": "a:1", "push": True}, "deploy() does not push images"),
    ({"image": "a:1", "job_variables": {"image": "b:2"}}, "image='a:1' and job_variables['image']='b:2' disagree"),
    ({"image": ""}, "image must be an image name"),
])
def test_flow_deploy_refuses_image_options_it_cannot_honour(flow_project: Path, options: dict[str, Any],
                                                            message: str) -> None:
    import documented  # type: ignore[import-not-found]

    with pytest.raises(DeploymentError, match=re.escape(message)):
        documented.load.deploy("boxed", "local", **options)
