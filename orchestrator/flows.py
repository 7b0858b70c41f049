"""``@flow`` and ``Flow.deploy``."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from typing import Unpack

    from orchestrator.serve import DeploymentOptions, ServedDeployment

P = ParamSpec("P")
R = TypeVar("R")


class Flow(Generic[P, R]):
    """A function registered as a flow. Calling it runs it in-process."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        version: str | None = None,
        description: str | None = None,
        retries: int = 0,
        retry_delay_seconds: float = 0.0,
    ) -> None:
        if not callable(fn):
            raise TypeError("@flow decorates a function")
        self.fn = fn
        self.name = name or fn.__name__.replace("_", "-")
        self.version = version
        self.description = description if description is not None else inspect.getdoc(fn)
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        attempt = 0
        while True:
            try:
                return self.fn(*args, **kwargs)
            except Exception:
                if attempt >= self.retries:
                    raise
                attempt += 1
                time.sleep(self.retry_delay_seconds)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r}, fn={self.fn.__module__}.{self.fn.__qualname__})"

    def deploy(
        self,
        name: str,
        work_pool_name: str,
        *,
        work_queue_name: str | None = None,
        parameters: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
        cron: str | None = None,
        interval: float | None = None,
        rrule: str | None = None,
        schedules: list[dict[str, Any]] | None = None,
        triggers: list[dict[str, Any]] | None = None,
        tags: list[str] | None = None,
        version: str | None = None,
        description: str | None = None,
        paused: bool = False,
        enforce_parameter_schema: bool = True,
        pull_steps: list[dict[str, Any]] | None = None,
        concurrency_limit: int | dict[str, Any] | None = None,
        crash_retries: int = 0,
    ) -> uuid.UUID:
        """Register (create or update) the deployment ``{flow}/{name}`` and return its id.

        The entrypoint is this function's source file relative to the working directory, which
        becomes the deployment's ``path``. ``concurrency_limit`` is a number or
        ``{"limit": n, "collision_strategy": "ENQUEUE" | "CANCEL_NEW"}``; ``crash_retries`` restarts
        a run that crashed (its infrastructure died) up to that many times.
        """
        from orchestrator import schemas
        from orchestrator.client import Client
        from orchestrator.parameters import parameter_schema
        from orchestrator.settings import Settings

        entrypoint, path = self.entrypoint()
        self.check_entrypoint(entrypoint)
        all_schedules = list(schedules or [])
        if cron is not None:
            all_schedules.append({"cron": cron})
        if interval is not None:
            all_schedules.append({"interval": interval})
        if rrule is not None:
            all_schedules.append({"rrule": rrule})
        request = schemas.DeploymentCreate(
            flow_name=self.name,
            name=name,
            entrypoint=entrypoint,
            path=None if pull_steps else path,  # pull steps bring the code; this folder may not exist there
            parameters=parameters or {},
            parameter_openapi_schema=parameter_schema(self.fn),
            enforce_parameter_schema=enforce_parameter_schema,
            schedules=all_schedules,
            paused=paused,
            triggers=triggers or [],
            version=version or self.version or self.default_version(),
            description=description if description is not None else self.description,
            tags=tags or [],
            work_pool_name=work_pool_name,
            work_queue_name=work_queue_name,
            job_variables=job_variables or {},
            pull_steps=pull_steps or [],
            crash_retries=crash_retries,
            **schemas.concurrency_fields(concurrency_limit),
        )
        with_client = Client.from_settings(Settings())
        try:
            deployment = with_client.upsert_deployment(request)
        finally:
            with_client.close()
        # As Prefect's deploy() does: say what happened and how to run it.
        print(f"Deployment '{deployment.full_name}' deployed to work pool '{deployment.work_pool_name}'.\n"
              f"Run it with: orch deployment run {deployment.full_name}", flush=True)
        return deployment.id

    def entrypoint(self) -> tuple[str, str]:
        """``(entrypoint, path)`` for this flow; refuses flows that no process could import."""
        from orchestrator.errors import DeploymentError

        fn = self.fn
        source = inspect.getsourcefile(fn) if hasattr(fn, "__code__") else None
        if source is None or source.startswith("<") or "ipykernel" in source or not Path(source).is_file():
            raise DeploymentError(
                f"flow '{self.name}' was defined in an interactive session (REPL or notebook), so a worker "
                "could not import it; move it into a .py file and deploy from there"
            )
        if "<locals>" in fn.__qualname__:
            raise DeploymentError(
                f"flow '{self.name}' is defined inside a function ({fn.__qualname__}); define it at module level"
            )
        cwd = Path(os.getcwd()).resolve()
        file = Path(source).resolve()
        attribute = self._bound_name()
        if file.is_relative_to(cwd):
            return f"{file.relative_to(cwd).as_posix()}:{attribute}", str(cwd)
        module = fn.__module__
        if module != "__main__" and module in sys.modules:
            return f"{module}:{attribute}", str(cwd)
        raise DeploymentError(f"flow '{self.name}' lives in {file}, outside the working directory {cwd}")

    def _bound_name(self) -> str:
        """The module-level name this flow object is bound to (``job = flow(name="x")(impl)`` is
        ``job``, not ``impl``); the function's name when it is bound to none."""
        module = sys.modules.get(self.fn.__module__)
        if module is None or getattr(module, self.fn.__qualname__, None) is self:
            return self.fn.__qualname__
        return next((name for name, value in vars(module).items() if value is self), self.fn.__qualname__)

    def check_entrypoint(self, entrypoint: str) -> None:
        """Refuse an entrypoint that would load something other than this flow. Checked against
        the already imported module, so deploying does not run the module's code a second time."""
        from orchestrator.errors import DeploymentError

        found: Any = sys.modules.get(self.fn.__module__)
        for part in entrypoint.rpartition(":")[2].split("."):
            found = getattr(found, part, None)
        if found is self:
            return
        if isinstance(found, Flow):
            what = f"flow '{found.name}'"
        elif found is None:
            what = "nothing"
        else:
            what = f"{type(found).__name__} {getattr(found, '__qualname__', repr(found)[:80])!r}, not a flow"
        raise DeploymentError(f"entrypoint '{entrypoint}' does not load flow '{self.name}': it finds {what}; "
                              "bind the flow to a module-level name")

    def default_version(self) -> str:
        """The short git commit when the flow's source file is in a git work tree, else a hash of
        the flow's source."""
        try:
            folder = Path(inspect.getsourcefile(self.fn) or "").resolve().parent
            done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, TypeError, subprocess.SubprocessError):
            return self.source_hash()
        commit = done.stdout.strip()
        return commit if done.returncode == 0 and commit else self.source_hash()

    def to_deployment(self, name: str, **options: Unpack[DeploymentOptions]) -> ServedDeployment:
        """This flow as the deployment ``name``, for ``serve(*deployments)``."""
        from orchestrator.serve import to_deployment

        return to_deployment(self, name, **options)

    def serve(self, name: str, *, limit: int = 10, pause_on_shutdown: bool = True,
              **options: Unpack[DeploymentOptions]) -> None:
        """Register the deployment ``{flow}/{name}`` and run its runs in subprocesses of this
        process until interrupted (see ``orchestrator.serve``). Options as for ``deploy``:
        ``cron=``, ``interval=``, ``rrule=``, ``parameters=``, ``tags=``, ``version=``..."""
        from orchestrator.serve import serve

        serve(self.to_deployment(name, **options), limit=limit, pause_on_shutdown=pause_on_shutdown)

    def source_hash(self) -> str:
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            source = self.fn.__qualname__
        return hashlib.sha256(source.encode()).hexdigest()[:12]


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 0.0,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 0.0,
) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Mark a function as a flow: ``@flow`` or ``@flow(name=..., retries=...)``."""

    def wrap(f: Callable[P, R]) -> Flow[P, R]:
        return Flow(f, name=name, version=version, description=description, retries=retries,
                    retry_delay_seconds=retry_delay_seconds)

    return wrap(fn) if fn is not None else wrap
