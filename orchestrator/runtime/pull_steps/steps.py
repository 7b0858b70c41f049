"""The pull steps that run a command or change directory, and the subprocess plumbing every step
shares (``git_clone`` in ``git.py`` uses it too).

A step function takes its rendered inputs as keyword arguments and returns its outputs; it fails
by raising ``StepFailed``, whose message ``run_pull_steps`` reports as the step's failure. Output
it echoes or reports is redacted of the secrets it is given. Standard library only (see the
package's docstring).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TAIL_LINES = 20
TAIL_CHARS = 2000


class StepFailed(Exception):
    """Raised by a step function; carries the (already redacted) tail of its error output."""


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
    done = run_command(["/bin/sh", "-e", "-c", script], cwd=cwd, env=environment, secrets=(), echo=stream_output)
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
    done = run_command(argv, cwd=cwd, env=dict(os.environ), secrets=(), echo=stream_output)
    return {"stdout": done.stdout.strip(), "stderr": done.stderr.strip()}


def run_command(argv: list[str], *, cwd: str | None, env: dict[str, str], secrets: tuple[str, ...],
                echo: bool) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` without input; with ``echo``, copy its output to ours. A non-zero exit raises
    ``StepFailed`` with the tail of its error output, ``secrets`` replaced by ``***``."""
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


def _existing_dir(directory: str | None) -> str | None:
    if directory is None:
        return None
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise StepFailed(f"directory {path.resolve()} does not exist")
    return str(path)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
