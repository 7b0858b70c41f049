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

Only the standard library is imported here: the API server validates pull steps with this module
and every flow-run process imports it.
"""

from __future__ import annotations

import atexit
import base64
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError

PLACEHOLDER = re.compile(r"\{\{\s*(\$?[\w.\-]+)\s*\}\}")
STEP_ID = re.compile(r"^[\w\-]+$")
TAIL_LINES = 20
TAIL_CHARS = 2000
_MISSING = object()


class PullStepError(OrchestratorError):
    """A pull step could not run or failed; the message names the step and ends with the tail of
    its error output."""

    status_code = 0

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"pull step {step} failed: {detail}")
        self.step = step


class StepFailed(Exception):
    """Raised by a step function; carries the (already redacted) tail of its error output."""


# --- the steps ---------------------------------------------------------------------------------


def git_clone(
    repository: str,
    branch: str | None = None,
    commit_sha: str | None = None,
    access_token: str | None = None,
    username: str | None = None,
    directories: list[str] | None = None,
    directory: str | None = None,
    include_submodules: bool = False,
) -> dict[str, str]:
    """Clone ``repository`` (a URL or a local path) into ``directory`` (default: the repository's
    name). ``branch`` or ``commit_sha`` pick what is checked out (default: the remote's HEAD);
    ``directories`` limits the checkout to those folders (plus top-level files). An
    ``access_token`` (usually ``"{{ $GIT_TOKEN }}"``) is sent as an HTTP ``Authorization`` header
    scoped to the repository's host; it is never written to disk, to the command line or to output.

    Outputs: ``directory`` (absolute path of the clone) and ``commit_sha`` (what is checked out).
    """
    if branch and commit_sha:
        raise StepFailed("give either branch or commit_sha, not both")
    name = repository.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    destination = Path(directory or name.removesuffix(".git") or "repository").resolve()
    if destination.exists() and any(destination.iterdir()):
        raise StepFailed(f"destination {destination} already exists and is not empty")
    env, secrets = _git_environment(repository, access_token, username)
    git = _GitRunner(env, secrets)
    if commit_sha:
        git("init", "-q", str(destination))
        git("-C", str(destination), "remote", "add", "origin", repository)
        if directories:
            git("-C", str(destination), "sparse-checkout", "set", "--", *directories)
        try:  # a full SHA can usually be fetched alone; a short one or a strict server needs history
            git("-C", str(destination), "fetch", "-q", "--depth", "1", "origin", commit_sha)
            target = "FETCH_HEAD"
        except StepFailed:
            git("-C", str(destination), "fetch", "-q", "origin")
            target = commit_sha
        try:
            git("-C", str(destination), "-c", "advice.detachedHead=false", "checkout", "-q", target)
        except StepFailed as error:
            raise StepFailed(f"commit {commit_sha} not found in {_public(repository)}: {error}") from None
        if include_submodules:
            git("-C", str(destination), "submodule", "update", "--init", "--recursive", "--depth", "1")
    else:
        argv = ["clone", "-q", "--depth", "1"]
        if branch:
            argv += ["--branch", branch]
        if directories:
            argv += ["--sparse", "--filter=blob:none"]
        if include_submodules:
            argv += ["--recurse-submodules", "--shallow-submodules"]
        git(*argv, "--", repository, str(destination))
        if directories:
            git("-C", str(destination), "sparse-checkout", "set", "--", *directories)
    sha = git("-C", str(destination), "rev-parse", "HEAD").strip()
    print(f"cloned {_public(repository)} at {sha[:12]} into {destination}", flush=True)
    return {"directory": str(destination), "commit_sha": sha}


def set_working_directory(directory: str) -> dict[str, str]:
    """Make ``directory`` the working directory. Output: ``directory`` (absolute)."""
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise StepFailed(f"directory {path} does not exist")
    os.chdir(path)
    return {"directory": str(path)}


def run_shell_script(
    script: str,
    directory: str | None = None,
    env: dict[str, str] | None = None,
    stream_output: bool = True,
) -> dict[str, str]:
    """Run ``script`` with ``sh -e`` (so the first failing command fails the step) in ``directory``
    with ``env`` added to the environment. Outputs: ``stdout`` and ``stderr`` (stripped)."""
    cwd = _existing_dir(directory)
    environment = {**os.environ, **{str(k): str(v) for k, v in (env or {}).items()}}
    done = _run(["/bin/sh", "-e", "-c", script], cwd=cwd, env=environment, secrets=(), echo=stream_output)
    return {"stdout": done.stdout.strip(), "stderr": done.stderr.strip()}


def pip_install_requirements(
    directory: str | None = None,
    requirements_file: str = "requirements.txt",
    stream_output: bool = True,
) -> dict[str, str]:
    """``pip install -r requirements_file`` (relative to ``directory``) into the Python that runs the
    flow. Outputs: ``stdout`` and ``stderr``."""
    cwd = _existing_dir(directory)
    file = Path(cwd or ".") / requirements_file
    if not file.is_file():
        raise StepFailed(f"requirements file {file.resolve()} not found")
    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(file)]
    done = _run(argv, cwd=cwd, env=dict(os.environ), secrets=(), echo=stream_output)
    return {"stdout": done.stdout.strip(), "stderr": done.stderr.strip()}


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


def _existing_dir(directory: str | None) -> str | None:
    if directory is None:
        return None
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise StepFailed(f"directory {path.resolve()} does not exist")
    return str(path)


def _run(argv: list[str], *, cwd: str | None, env: dict[str, str], secrets: tuple[str, ...],
         echo: bool) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", check=False)
    except OSError as error:
        raise StepFailed(f"cannot run {argv[0]}: {error}") from None
    if echo:
        for stream, target in ((done.stdout, sys.stdout), (done.stderr, sys.stderr)):
            if stream.strip():
                print(_redact(stream.rstrip("\n"), secrets), file=target, flush=True)
    if done.returncode != 0:
        output = done.stderr if done.stderr.strip() else done.stdout
        raise StepFailed(_tail(_redact(output, secrets)) or f"exited with code {done.returncode}")
    return done


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- git ---------------------------------------------------------------------------------------


class _GitRunner:
    def __init__(self, env: dict[str, str], secrets: tuple[str, ...]) -> None:
        self.env = env
        self.secrets = secrets

    def __call__(self, *args: str) -> str:
        try:
            return _run(["git", *args], cwd=None, env=self.env, secrets=self.secrets, echo=False).stdout
        except StepFailed as error:
            if "could not read Username" not in str(error):
                raise
            # git's own words only say it could not prompt; say what it means here.
            hint = ("the server did not accept the access token" if self.secrets
                    else "the repository needs credentials: give git_clone an access_token")
            raise StepFailed(f"{error} ({hint})") from None


def _git_environment(repository: str, token: str | None, username: str | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """git never prompts (a run has no terminal); a token travels as an extra HTTP header given
    through ``GIT_CONFIG_*`` variables, so it appears neither in argv nor in the clone's config."""
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    url = urllib.parse.urlsplit(repository)
    in_url = (url.password,) if url.password else ()  # a password written into the URL itself
    if not token:
        return env, in_url
    if url.scheme not in ("http", "https") or not url.hostname:
        raise StepFailed(f"access_token needs an http(s) repository URL, got {_public(repository)}")
    user = username or _default_username(url.hostname)
    credentials = base64.b64encode(f"{user}:{token}".encode()).decode()
    index = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
    origin = f"{url.scheme}://{url.netloc.rpartition('@')[2]}/"
    env[f"GIT_CONFIG_KEY_{index}"] = f"http.{origin}.extraHeader"
    env[f"GIT_CONFIG_VALUE_{index}"] = f"Authorization: Basic {credentials}"
    env["GIT_CONFIG_COUNT"] = str(index + 1)
    return env, (token, credentials, *in_url)


def _default_username(host: str) -> str:
    # What each forge expects next to a token in Basic auth.
    if "gitlab" in host:
        return "oauth2"
    if "bitbucket" in host:
        return "x-token-auth"
    return "x-access-token"


def _public(repository: str) -> str:
    """The repository URL without any user or password in it, for messages."""
    url = urllib.parse.urlsplit(repository)
    if url.scheme and "@" in url.netloc:
        return urllib.parse.urlunsplit(url._replace(netloc=url.netloc.rpartition("@")[2]))
    return repository
