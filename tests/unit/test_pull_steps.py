"""Pull steps against real git repositories: by path, and served over HTTP on 127.0.0.1 by
``git http-backend`` behind a server that demands a token."""

from __future__ import annotations

import base64
import hashlib
import os
import site
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.pull_steps import (
    PullStepError,
    check_pull_steps,
    git_clone,
    run_pull_steps,
    set_working_directory,
)

TOKEN = "s3cr3t-t0ken-value"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


@dataclass
class Repo:
    path: Path
    first: str  # sha of the first commit on main
    head: str  # sha of main's head
    feature_head: str


def make_repo(root: Path) -> Repo:
    """main: two commits (app/version.txt 'one' then 'two'); branch feature: 'feature'."""
    path = root / "flows-repo"
    (path / "app").mkdir(parents=True)
    (path / "other").mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("top-level file\n")
    (path / "app" / "version.txt").write_text("one\n")
    (path / "other" / "big.txt").write_text("not needed\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "first")
    first = git(path, "rev-parse", "HEAD")
    (path / "app" / "version.txt").write_text("two\n")
    git(path, "commit", "-qam", "second")
    head = git(path, "rev-parse", "HEAD")
    git(path, "checkout", "-qb", "feature")
    (path / "app" / "version.txt").write_text("feature\n")
    git(path, "commit", "-qam", "feature")
    feature = git(path, "rev-parse", "HEAD")
    git(path, "checkout", "-q", "main")
    return Repo(path, first, head, feature)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path / "origin")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # restored after the test, whatever the steps did
    return work


# --- git over HTTP with a token ------------------------------------------------------------------


@dataclass
class GitServer:
    url: str
    seen_authorization: list[str | None] = field(default_factory=list)


class _GitHandler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        authorization = self.headers.get("Authorization")
        self.server.record.seen_authorization.append(authorization)
        if authorization != self.server.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1", "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        output = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
        separator = b"\r\n\r\n" if b"\r\n\r\n" in output else b"\n\n"
        head, _, payload = output.partition(separator)
        status, headers = 200, []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def git_server(repo: Repo) -> Iterator[GitServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHandler)
    server.root = repo.path.parent  # type: ignore[attr-defined]
    server.expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()  # type: ignore[attr-defined]
    record = GitServer(url=f"http://127.0.0.1:{server.server_address[1]}/{repo.path.name}")
    server.record = record  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield record
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# --- git_clone ---------------------------------------------------------------------------------


def test_git_clone_by_path_checks_out_the_default_branch(repo: Repo, workdir: Path) -> None:
    out = git_clone(repository=str(repo.path))

    assert out == {"directory": str(workdir / "flows-repo"), "commit_sha": repo.head}
    assert (workdir / "flows-repo" / "app" / "version.txt").read_text() == "two\n"


def test_git_clone_of_a_branch(repo: Repo, workdir: Path) -> None:
    out = git_clone(repository=str(repo.path), branch="feature", directory="code")

    assert out["commit_sha"] == repo.feature_head
    assert Path(out["directory"]) == workdir / "code"
    assert (workdir / "code" / "app" / "version.txt").read_text() == "feature\n"


@pytest.mark.parametrize("length", [40, 7])
def test_git_clone_of_a_commit_full_or_short(repo: Repo, workdir: Path, length: int) -> None:
    out = git_clone(repository=str(repo.path), commit_sha=repo.first[:length])

    assert out["commit_sha"] == repo.first
    assert (Path(out["directory"]) / "app" / "version.txt").read_text() == "one\n"


def test_git_clone_of_an_unknown_commit_fails_naming_it(repo: Repo, workdir: Path) -> None:
    with pytest.raises(PullStepError, match="git_clone failed: commit 0123456789ab not found"):
        run_pull_steps([{"git_clone": {"repository": str(repo.path), "commit_sha": "0123456789ab"}}], workdir=workdir)


def test_git_clone_of_an_unknown_branch_fails_with_gits_message(repo: Repo, workdir: Path) -> None:
    with pytest.raises(PullStepError) as caught:
        run_pull_steps([{"git_clone": {"repository": str(repo.path), "branch": "nope"}}], workdir=workdir)

    assert str(caught.value).startswith("pull step git_clone failed: ")
    assert "nope" in str(caught.value)  # git: "Remote branch nope not found in upstream origin"
    assert caught.value.step == "git_clone"


@pytest.mark.parametrize("commit", [False, True])
def test_git_clone_sparse_directories(repo: Repo, workdir: Path, commit: bool) -> None:
    extra = {"commit_sha": repo.head} if commit else {}
    out = git_clone(repository=str(repo.path), directories=["app"], **extra)

    clone = Path(out["directory"])
    assert (clone / "app" / "version.txt").read_text() == "two\n"
    assert (clone / "README.md").is_file()  # top-level files stay
    assert not (clone / "other").exists()


def test_git_clone_sends_the_token_from_the_environment_as_a_header(
    repo: Repo, git_server: GitServer, workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    outputs = run_pull_steps(
        [{"git_clone": {"id": "clone", "repository": git_server.url, "access_token": "{{ $GIT_TOKEN }}"}}],
        environ={"GIT_TOKEN": TOKEN}, workdir=workdir,
    )

    clone = Path(outputs["clone"]["directory"])
    assert (clone / "app" / "version.txt").read_text() == "two\n"
    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert git_server.seen_authorization and set(git_server.seen_authorization) == {expected}
    assert TOKEN not in (clone / ".git" / "config").read_text()  # nothing stored with the clone
    printed = capfd.readouterr()
    assert TOKEN not in printed.out + printed.err
    assert Path.cwd() == clone  # the run continues in the clone


def test_git_clone_with_a_wrong_token_fails_without_printing_it(
    repo: Repo, git_server: GitServer, workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = "wr0ng-t0ken-value"
    with pytest.raises(PullStepError) as caught:
        run_pull_steps([{"git_clone": {"repository": git_server.url, "access_token": wrong}}], workdir=workdir)

    message = str(caught.value)
    assert message.startswith("pull step git_clone failed: ")
    assert "the server did not accept the access token" in message, message
    printed = capfd.readouterr()
    for secret in (wrong, base64.b64encode(f"x-access-token:{wrong}".encode()).decode()):
        assert secret not in message
        assert secret not in printed.out + printed.err
    assert git_server.seen_authorization[-1] is not None  # the (wrong) header was sent


def test_git_clone_without_a_token_fails_at_once_instead_of_prompting(
    repo: Repo, git_server: GitServer, workdir: Path
) -> None:
    with pytest.raises(PullStepError, match="git_clone failed: .*the repository needs credentials"):
        run_pull_steps([{"git_clone": {"repository": git_server.url}}], workdir=workdir)


def test_git_clone_token_needs_an_http_url(repo: Repo, workdir: Path) -> None:
    with pytest.raises(PullStepError, match="access_token needs an http"):
        run_pull_steps([{"git_clone": {"repository": str(repo.path), "access_token": TOKEN}}], workdir=workdir)


def test_git_clone_token_from_an_unset_variable_is_named(repo: Repo, git_server: GitServer, workdir: Path) -> None:
    with pytest.raises(PullStepError, match="environment variable GIT_TOKEN .* is not set"):
        run_pull_steps([{"git_clone": {"repository": git_server.url, "access_token": "{{ $GIT_TOKEN }}"}}],
                       environ={}, workdir=workdir)


def test_git_clone_refuses_a_non_empty_destination(repo: Repo, workdir: Path) -> None:
    (workdir / "flows-repo").mkdir()
    (workdir / "flows-repo" / "x").write_text("x")
    with pytest.raises(PullStepError, match="already exists"):
        run_pull_steps([{"git_clone": {"repository": str(repo.path)}}], workdir=workdir)


# --- running steps -----------------------------------------------------------------------------


def test_outputs_feed_later_steps_and_the_last_directory_wins(repo: Repo, workdir: Path) -> None:
    outputs = run_pull_steps([
        {"git_clone": {"id": "clone", "repository": str(repo.path), "branch": "feature"}},
        {"run_shell_script": {"id": "read", "script": "cat app/version.txt; echo warn >&2",
                              "directory": "{{ clone.directory }}"}},
        {"run_shell_script": {"id": "echo", "script": "echo 'sha={{ clone.commit_sha }} v={{ read.stdout }}'"}},
        {"set_working_directory": {"directory": "{{ clone.directory }}/app"}},
    ], workdir=workdir)

    assert outputs["read"] == {"stdout": "feature", "stderr": "warn"}
    assert outputs["echo"]["stdout"] == f"sha={repo.feature_head} v=feature"
    assert Path.cwd() == workdir / "flows-repo" / "app"


def test_steps_start_in_a_fresh_directory_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    outputs = run_pull_steps([{"run_shell_script": {"id": "where", "script": "pwd; ls -A | wc -l"}}])

    where, count = outputs["where"]["stdout"].splitlines()
    assert Path(where) != tmp_path and Path(where).name.startswith("orch-run-")
    assert count.strip() == "0"
    assert Path.cwd() == Path(where)  # no directory output: stay where the steps ran


def test_exact_placeholder_keeps_the_outputs_type(workdir: Path) -> None:
    outputs = run_pull_steps([
        {"run_shell_script": {"id": "a", "script": "echo hi"}},
        {"run_shell_script": {"id": "b", "script": "echo {{ a.stdout }}", "env": {"X": "{{ $HOME_X }}"}}},
    ], environ={"HOME_X": "1"}, workdir=workdir)
    assert outputs["b"]["stdout"] == "hi"


def test_a_failing_script_ends_with_the_tail_of_its_error_output(workdir: Path) -> None:
    script = "for i in $(seq 1 50); do echo line-$i >&2; done; exit 3"
    with pytest.raises(PullStepError) as caught:
        run_pull_steps([{"run_shell_script": {"id": "build", "script": script}}], workdir=workdir)

    message = str(caught.value)
    assert message.startswith("pull step run_shell_script (build) failed: ")
    assert message.endswith("line-50")
    assert "line-31" in message and "line-30\n" not in message  # the last 20 lines only


def test_a_script_stops_at_its_first_failing_command(workdir: Path) -> None:
    with pytest.raises(PullStepError, match="no-such-command"):
        run_pull_steps([{"run_shell_script": {"script": "no-such-command-xyz\necho after > marker"}}], workdir=workdir)
    assert not (workdir / "marker").exists()


def test_a_reference_to_an_unknown_step_is_named(workdir: Path) -> None:
    with pytest.raises(PullStepError, match=r"run_shell_script failed: '\{\{ clone.directory \}\}' names no earlier"):
        run_pull_steps([{"run_shell_script": {"script": "echo {{ clone.directory }}"}}], workdir=workdir)


def test_a_reference_to_an_unknown_output_is_named(workdir: Path) -> None:
    with pytest.raises(PullStepError, match="step 'a' has no output 'dir'"):
        run_pull_steps([{"run_shell_script": {"id": "a", "script": "true"}},
                        {"set_working_directory": {"directory": "{{ a.dir }}"}}], workdir=workdir)


def test_set_working_directory_to_a_missing_folder_fails(workdir: Path) -> None:
    with pytest.raises(PullStepError, match="set_working_directory failed: directory .*missing does not exist"):
        run_pull_steps([{"set_working_directory": {"directory": "missing"}}], workdir=workdir)


def test_set_working_directory_changes_the_directory(tmp_path: Path, workdir: Path) -> None:
    assert set_working_directory(str(tmp_path)) == {"directory": str(tmp_path.resolve())}
    assert Path.cwd() == tmp_path.resolve()


def test_qualified_names_of_steps_are_accepted(repo: Repo, workdir: Path) -> None:
    outputs = run_pull_steps([
        {"prefect.deployments.steps.git_clone": {"id": "c", "repository": str(repo.path)}},
        {"orchestrator.pull_steps.run_shell_script": {"id": "s", "script": "cat app/version.txt",
                                                    "directory": "{{ c.directory }}"}},
    ], workdir=workdir)
    assert outputs["s"]["stdout"] == "two"


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "expected"), [
    ("git_clone", "must be a list"),
    ([{"git_clone": {"repository": "x"}, "other": {}}], "one key"),
    (["git_clone"], "one key"),
    ([{"git_pull": {}}], "unknown pull step 'git_pull'"),
    ([{"git_clone": {}}], "git_clone: missing required input(s) repository"),
    ([{"git_clone": {"repository": "x", "token": "t"}}], "git_clone: unknown input(s) token"),
    ([{"git_clone": {"repository": "x", "branch": "b", "commit_sha": "c"}}], "either branch or commit_sha"),
    ([{"run_shell_script": "echo"}], "inputs must be a mapping"),
    ([{"run_shell_script": {"script": "a", "id": "x"}}, {"run_shell_script": {"script": "b", "id": "x"}}],
     "id 'x' is used by an earlier step"),
    ([{"run_shell_script": {"script": "a", "id": "a b"}}], "id must be"),
])
def test_check_pull_steps_names_each_problem(steps: Any, expected: str) -> None:
    problems = check_pull_steps(steps)
    assert problems and any(expected in message for _, message in problems), problems


def test_check_pull_steps_accepts_good_steps() -> None:
    assert check_pull_steps([
        {"git_clone": {"id": "clone", "repository": "https://example.invalid/r.git", "branch": "main",
                       "access_token": "{{ $T }}", "directories": ["a"]}},
        {"pip_install_requirements": None},
        {"set_working_directory": {"directory": "{{ clone.directory }}"}},
    ]) == []


def test_invalid_steps_are_refused_before_anything_runs(workdir: Path) -> None:
    with pytest.raises(PullStepError, match="pull step #2 failed: unknown pull step"):
        run_pull_steps([{"run_shell_script": {"script": "touch ran"}}, {"nope": {}}], workdir=workdir)
    assert not (workdir / "ran").exists()


# --- pip_install_requirements, in a throwaway virtual environment ------------------------------


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel built by hand: no build backend, no index needed."""
    files = {
        "tinypkg_orch/__init__.py": "VALUE = 42\n",
        "tinypkg_orch-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg-orch\nVersion: 0.1\n",
        "tinypkg_orch-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("tinypkg_orch-0.1.dist-info/RECORD,,")
    path = folder / "tinypkg_orch-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("tinypkg_orch-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def venv_python(tmp_path: Path) -> Path:
    """A throwaway venv that sees every package the running interpreter sees (this project, pip),
    whether that interpreter is the system's or a user's own venv, and installs into itself only.

    ``--system-site-packages`` alone shows the *base* interpreter's packages, not those of the venv
    pytest runs in; ``site.addsitedir`` in a .pth file adds the running interpreter's site folders
    the way ``site`` does, .pth files included (editable installs are .pth files)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, timeout=60)
    python = venv / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in outer)
    (Path(own_site) / "_outer_site.pth").write_text(lines)
    return python


def _in_venv(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=90,
                          check=False)


def test_pip_install_requirements_installs_into_the_running_python(venv_python: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    wheel = _wheel(project)
    (project / "reqs.txt").write_text(f"--no-index\n./{wheel.name}\n")
    step = ("from orchestrator.runtime.pull_steps import run_pull_steps\n"
            "out = run_pull_steps([{'pip_install_requirements': {'id': 'pip', 'directory': '.',"
            " 'requirements_file': 'reqs.txt'}}], workdir='" + str(project) + "')\n"
            "print('STDOUT-HAS-WHEEL', 'tinypkg' in out['pip']['stdout'].lower())\n")

    done = _in_venv(venv_python, step, project)
    assert done.returncode == 0, done.stderr
    assert "STDOUT-HAS-WHEEL True" in done.stdout
    imported = _in_venv(venv_python, "import tinypkg_orch; print(tinypkg_orch.VALUE)", tmp_path)
    assert imported.stdout.strip() == "42", imported.stderr
    assert subprocess.run([sys.executable, "-c", "import tinypkg_orch"], capture_output=True, check=False).returncode != 0


def test_pip_install_requirements_failure_names_the_step(venv_python: Path, tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("--no-index\nno-such-package-orch-xyz==1.0\n")
    step = ("from orchestrator.runtime.pull_steps import run_pull_steps, PullStepError\n"
            "try:\n"
            "    run_pull_steps([{'pip_install_requirements': {'directory': '" + str(tmp_path) + "'}}])\n"
            "except PullStepError as e:\n"
            "    print('ERROR:', e)\n")
    done = _in_venv(venv_python, step, tmp_path)
    assert "ERROR: pull step pip_install_requirements failed: " in done.stdout, done.stdout + done.stderr
    assert "no-such-package-orch-xyz" in done.stdout


def test_pip_install_requirements_without_the_file(workdir: Path) -> None:
    with pytest.raises(PullStepError, match="pip_install_requirements failed: requirements file .* not found"):
        run_pull_steps([{"pip_install_requirements": {}}], workdir=workdir)
