"""The ``git_clone`` pull step: clone (optionally sparse, at a branch or a commit) with a token
that never reaches the disk, the command line or the output.

Standard library only (see the package's docstring).
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from pathlib import Path

from orchestrator.runtime.pull_steps.steps import StepFailed, run_command


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


class _GitRunner:
    def __init__(self, env: dict[str, str], secrets: tuple[str, ...]) -> None:
        self.env = env
        self.secrets = secrets

    def __call__(self, *args: str) -> str:
        try:
            return run_command(["git", *args], cwd=None, env=self.env, secrets=self.secrets, echo=False).stdout
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
