"""``orch deploy`` of an ``orchestrator.yaml`` whose pull steps clone a local git repository,
``orch deployment preview``, and ``Flow.serve`` -- as a user types them, on both stacks."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.harness import wait_until

pytestmark = pytest.mark.e2e

GREET = textwrap.dedent('''
    from orchestrator import flow

    @flow
    def greet(who: str = "world") -> str:
        """Greet someone."""
        print("greeting", who)
        return "{origin}: hello " + who
''')
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x.invalid"}


def code_repo(root: Path) -> Path:
    """A git repository holding the flow's code as the run must see it ('repo: ...')."""
    repo = root / "code-repo"
    (repo / "flows").mkdir(parents=True)
    (repo / "flows" / "greet.py").write_text(GREET.format(origin="repo"))
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "flows"]):
        subprocess.run(["git", *argv], cwd=repo, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)
    return repo


def start_server_and_pool(stack: Stack) -> None:
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    created = stack.orch("work-pool", "create", "local", "--type", "process")
    assert created.returncode == 0, created.stderr


def ok(done: subprocess.CompletedProcess[str], stack: Stack) -> str:
    assert done.returncode == 0, done.stdout + done.stderr + stack.all_logs()
    return done.stdout


def run_result(stack: Stack, watched_stdout: str) -> Any:
    run_id = watched_stdout.split("(", 1)[1].split(")", 1)[0]
    return json.loads(ok(stack.orch("flow-run", "inspect", run_id), stack))


def test_orch_deploy_all_then_runs_from_the_cloned_code(stack: Stack, tmp_path: Path) -> None:
    repo = code_repo(tmp_path)
    # The project folder has its own copy (loaded at deploy time); runs must use the repository's.
    (stack.project / "flows").mkdir()
    (stack.project / "flows" / "greet.py").write_text(GREET.format(origin="local"))
    (stack.project / "orchestrator.yaml").write_text(textwrap.dedent(f'''
        deployments:
          - name: from-git
            entrypoint: flows/greet.py:greet
            parameters: {{who: e2e}}
            tags: [e2e]
            work_pool: {{name: local}}
            pull:
              - git_clone: {{id: clone, repository: "{repo}", branch: main}}
              - run_shell_script: {{script: "echo cloned at {{{{ clone.commit_sha }}}}"}}
          - name: broken
            entrypoint: flows/greet.py:greet
            work_pool: {{name: local}}
            pull:
              - git_clone: {{repository: "{repo}", branch: no-such-branch}}
    '''))
    start_server_and_pool(stack)

    deployed = ok(stack.orch("deploy", "--all"), stack)
    assert "Deployed greet/from-git" in deployed and "Deployed greet/broken" in deployed
    stack.start("worker", "worker", "start", "--pool", "local")

    watched = ok(stack.orch("deployment", "run", "greet/from-git", "--watch"), stack)
    assert "COMPLETED" in watched
    run = run_result(stack, watched)
    assert run["result"] == "repo: hello e2e"
    assert run["tags"] == ["e2e"]
    logs = ok(stack.orch("flow-run", "logs", run["id"]), stack)
    assert "cloned at" in logs and "greeting e2e" in logs

    failed = stack.orch("deployment", "run", "greet/broken", "--watch")
    assert failed.returncode != 0, failed.stdout + stack.all_logs()
    assert "FAILED" in failed.stdout
    assert "pull step git_clone failed:" in failed.stdout and "no-such-branch" in failed.stdout, failed.stdout


def test_redeploy_schedules_and_preview(stack: Stack) -> None:
    (stack.project / "flows.py").write_text(GREET.format(origin="local"))
    project = stack.project / "orchestrator.yaml"
    body = textwrap.dedent('''
        deployments:
          - name: here
            entrypoint: flows.py:greet
            work_pool: {name: local, job_variables: {env: {GREETING: hi}}}
    ''')
    project.write_text(body + "    schedules: [{interval: 3600}]\n")
    start_server_and_pool(stack)
    ok(stack.orch("deploy", "here"), stack)

    # A missing 'schedules' key keeps the server's; an empty list removes them.
    project.write_text(body)
    kept = ok(stack.orch("deploy"), stack)
    assert "1 schedule(s) kept from the server" in kept
    kept_schedules = json.loads(ok(stack.orch("deployment", "inspect", "greet/here"), stack))["schedules"]
    assert [s["interval"] for s in kept_schedules] == [3600]
    project.write_text(body + "    schedules: []\n")
    assert "no schedules (schedules: [])" in ok(stack.orch("deploy"), stack)
    details = json.loads(ok(stack.orch("deployment", "inspect", "greet/here"), stack))
    assert details["schedules"] == []
    assert details["path"] == str(stack.project.resolve())
    assert details["description"] == "Greet someone."

    job = json.loads(ok(stack.orch("deployment", "preview", "greet/here", "--job-variable", 'env={"B": "2"}'),
                        stack))
    assert job == {"env": {"GREETING": "hi", "B": "2"}, "stream_output": True}
    bad = stack.orch("deployment", "preview", "greet/here", "--job-variable", "stream_output=maybe")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error: job_variables.stream_output: job variable 'stream_output': 'maybe' is not of " \
                                 "type 'boolean'"
    unknown = stack.orch("deploy", "--job-variable", "comand=x")
    assert unknown.returncode == 1
    assert "deployment 'greet/here'" in unknown.stderr and "job variable 'comand' is not a variable" in unknown.stderr


SERVED = textwrap.dedent('''
    import time
    from orchestrator import flow

    @flow
    def hello(name: str = "world", seconds: float = 0) -> str:
        time.sleep(seconds)
        return f"served: hello {name}"

    if __name__ == "__main__":
        hello.serve("served", tags=["served"], limit=1)
''')


def test_flow_serve_runs_a_run_and_pauses_on_ctrl_c(stack: Stack, tmp_path: Path) -> None:
    (stack.project / "serve_it.py").write_text(SERVED)
    stack.start("server", "server", "start", "--port", str(stack.port))
    stack.wait_healthy()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    serving = subprocess.Popen([sys.executable, "serve_it.py"], cwd=stack.project, env=stack.env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        def serving_alive() -> None:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()

        deployment = wait_until("serve() to register its deployment",
                                lambda: stack.get("/deployments/name/hello/served"), 60, 0.2, alive=serving_alive,
                                ignore=(urllib.error.HTTPError,))
        assert deployment["work_pool_name"] == "serve" and deployment["paused"] is False

        watched = stack.orch("deployment", "run", "hello/served", "--param", "name=e2e", "--watch")
        assert watched.returncode == 0, watched.stdout + watched.stderr + (tmp_path / "serve.log").read_text()
        run = run_result(stack, watched.stdout)
        assert run["result"] == "served: hello e2e"
        assert run["tags"] == ["served"]

        # limit=1: two runs created together run one after the other.
        both = stack.python(textwrap.dedent('''
            import json
            from orchestrator import run_deployment
            from orchestrator.client import Client
            from orchestrator.sdk.deployments import wait_for_final
            from orchestrator.settings import Settings
            client = Client.from_settings(Settings())
            runs = [run_deployment("hello/served", parameters={"seconds": 1.0}, timeout=0, client=client)
                    for _ in range(2)]
            final = [wait_for_final(client, run, 60) for run in runs]
            print(json.dumps([[f.state.type, f.start_time.isoformat(), f.end_time.isoformat()] for f in final]))
        '''))
        assert both.returncode == 0, both.stderr
        (state_a, start_a, end_a), (state_b, start_b, end_b) = sorted(json.loads(both.stdout.splitlines()[-1]),
                                                                       key=lambda r: dt.datetime.fromisoformat(r[1]))
        assert state_a == state_b == "COMPLETED"
        parse = dt.datetime.fromisoformat
        assert parse(start_b) >= parse(end_a), (start_a, end_a, start_b, end_b)  # never two at once
        serving.send_signal(signal.SIGINT)  # Ctrl-C
        assert serving.wait(timeout=60) is not None
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait(timeout=10)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert "Serving hello/served on work pool 'serve'" in output
    assert "Paused hello/served (pause_on_shutdown)" in output, output
    assert stack.get("/deployments/name/hello/served")["paused"] is True
