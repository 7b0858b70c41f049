"""``@flow`` and ``Flow.deploy``."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, overload

# Imported where used, not here: every flow file starts with ``from orchestrator import flow``,
# and inspect, subprocess, uuid and pathlib cost it ~15-20 ms of CPU (issue 22;
# tests/unit/test_sdk_import.py). A flow-run process has them loaded by the engine already. A flow's
# default version is hashed without hashlib at all (``running.sha256_hex``: no libcrypto mapped).
if TYPE_CHECKING:
    import uuid
    from typing import Unpack

    from orchestrator.sdk.serve import DeploymentOptions, ServedDeployment

P = ParamSpec("P")
R = TypeVar("R")


HOOKS = ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running")


class FlowOptions(TypedDict, total=False):
    """What ``@flow(...)`` accepts: Prefect 3's options (docs/flows.md says what each does here;
    those marked *accepted* change nothing: results are not stored or cached)."""

    name: str | None
    version: str | None
    flow_run_name: str | Callable[[], str] | None
    retries: int | None
    retry_delay_seconds: float | list[float] | Callable[[int], list[float]] | None
    task_runner: Any  # accepted: submitted tasks run on a thread pool (async ones on an event loop)
    description: str | None
    timeout_seconds: float | None
    validate_parameters: bool
    persist_result: bool | None  # accepted
    result_storage: Any  # accepted
    result_serializer: Any  # accepted
    cache_result_in_memory: bool  # accepted
    log_prints: bool | None
    on_completion: list[Callable[..., Any]] | None
    on_failure: list[Callable[..., Any]] | None
    on_cancellation: list[Callable[..., Any]] | None
    on_crashed: list[Callable[..., Any]] | None
    on_running: list[Callable[..., Any]] | None


def check_options(options: dict[str, Any], known: type, what: str) -> None:
    """A misspelt option is a TypeError, as a misspelt keyword argument would be."""
    unknown = sorted(set(options) - set(known.__annotations__))
    if unknown:
        raise TypeError(f"{what} got unknown option(s) {', '.join(unknown)}")


class Flow(Generic[P, R]):
    """A function registered as a flow. Calling it runs it in-process; calling an ``async def``
    flow returns a coroutine to await."""

    def __init__(self, fn: Callable[P, R], **options: Unpack[FlowOptions]) -> None:
        if not callable(fn):
            raise TypeError("@flow decorates a function")
        check_options(dict(options), FlowOptions, "@flow")
        self.fn = fn
        self.options = options
        self.name = options.get("name") or fn.__name__.replace("_", "-")
        self.version = options.get("version")
        self.retries = options.get("retries") or 0
        self.retry_delay_seconds = options.get("retry_delay_seconds") or 0.0
        self.timeout_seconds = options.get("timeout_seconds")
        self.log_prints = options.get("log_prints")
        self.validate_parameters = options.get("validate_parameters", True)
        self.hooks = {hook: list(options.get(hook) or []) for hook in HOOKS}  # type: ignore[misc]
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @functools.cached_property
    def isasync(self) -> bool:
        """Whether the function is an ``async def`` (computed on first use: it needs ``inspect``)."""
        import inspect

        return inspect.iscoroutinefunction(self.fn)

    @functools.cached_property
    def description(self) -> str | None:
        """``@flow(description=)``, else the function's docstring (computed on first use)."""
        description = self.options.get("description")
        if description is not None:
            return description
        import inspect

        return inspect.getdoc(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from orchestrator.sdk.flow_calls import call

        return call(self, args, kwargs)  # type: ignore[no-any-return]

    def with_options(self, **options: Unpack[FlowOptions]) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        return Flow(self.fn, **{**self.options, **options})  # type: ignore[misc]

    def run_version(self) -> str:
        """The version each run records: ``@flow(version=)``, else a hash of the source."""
        return self.version or self.source_hash()

    def run_name(self, parameters: dict[str, Any]) -> str | None:
        """The run name ``flow_run_name`` asks for: a template of the parameters, or a callable."""
        template = self.options.get("flow_run_name")
        if callable(template):
            return str(template())
        return template.format(**parameters) if isinstance(template, str) else None

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r}, fn={self.fn.__module__}.{self.fn.__qualname__})"

    def deploy(
        self,
        name: str,
        work_pool_name: str | None = None,
        *,
        work_queue_name: str | None = None,
        parameters: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
        cron: str | None = None,
        interval: float | None = None,
        rrule: str | None = None,
        schedules: list[dict[str, Any]] | None = None,
        triggers: list[Any] | None = None,
        tags: list[str] | None = None,
        version: str | None = None,
        description: str | None = None,
        paused: bool = False,
        enforce_parameter_schema: bool = True,
        pull_steps: list[dict[str, Any]] | None = None,
        concurrency_limit: int | dict[str, Any] | None = None,
        crash_retries: int = 0,
        image: str | None = None,
        build: bool = False,
        push: bool = False,
    ) -> uuid.UUID:
        """Register (create or update) the deployment ``{flow}/{name}`` and return its id.

        The entrypoint is this function's source file relative to the working directory, which
        becomes the deployment's ``path``. ``concurrency_limit`` is a number or
        ``{"limit": n, "collision_strategy": "ENQUEUE" | "CANCEL_NEW"}``; ``crash_retries`` restarts
        a run that crashed (its infrastructure died) up to that many times. ``triggers`` (dicts in
        Prefect's shape, or ``schemas.automations.DeploymentEventTrigger`` and its kin) become
        automations that run this deployment, owned by it (replaced on each deploy).

        ``image`` is Prefect's argument: the ``image`` job variable of a docker or kubernetes pool
        (a pool without that variable refuses it). Unlike Prefect, nothing is built or pushed: the
        image must exist already, so ``build=True`` or ``push=True`` is refused.

        Without ``work_pool_name``, the pool is ``ORCH_DEFAULT_WORK_POOL_NAME`` (Prefect's
        ``PREFECT_DEFAULT_WORK_POOL_NAME``); with neither, ``DeploymentError`` says so.
        """
        from orchestrator import schemas
        from orchestrator.client import Client
        from orchestrator.parameters import parameter_schema
        from orchestrator.schemas.automations import trigger_as_dict
        from orchestrator.settings import Settings

        settings = Settings()
        work_pool_name = work_pool_name or settings.default_work_pool_name
        if not work_pool_name:
            from orchestrator.errors import DeploymentError

            raise DeploymentError(f"deployment '{self.name}/{name}' needs a work pool: pass work_pool_name=... "
                                  "or set ORCH_DEFAULT_WORK_POOL_NAME")
        job_variables = with_image(job_variables, image, build=build, push=push)
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
            triggers=[trigger_as_dict(t) for t in triggers or []],
            version=version or self.version or self.default_version(),
            description=description if description is not None else self.description,
            tags=tags or [],
            work_pool_name=work_pool_name,
            work_queue_name=work_queue_name,
            job_variables=job_variables,
            pull_steps=pull_steps or [],
            crash_retries=crash_retries,
            **schemas.concurrency_fields(concurrency_limit),
        )
        with_client = Client.from_settings(settings)
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
        import inspect
        from pathlib import Path

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
        import inspect
        import subprocess
        from pathlib import Path

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
        from orchestrator.sdk.serve import to_deployment

        return to_deployment(self, name, **options)

    def serve(self, name: str, *, limit: int = 10, pause_on_shutdown: bool = True,
              **options: Unpack[DeploymentOptions]) -> None:
        """Register the deployment ``{flow}/{name}`` and run its runs in subprocesses of this
        process until interrupted (see ``orchestrator.sdk.serve``). Options as for ``deploy``:
        ``cron=``, ``interval=``, ``rrule=``, ``parameters=``, ``tags=``, ``version=``..."""
        from orchestrator.sdk.serve import serve

        serve(self.to_deployment(name, **options), limit=limit, pause_on_shutdown=pause_on_shutdown)

    def source_hash(self) -> str:
        from orchestrator.sdk.running import source_hash

        return source_hash(self.fn)


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(**options: Unpack[FlowOptions]) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(fn: Callable[P, R] | None = None, /,
         **options: Unpack[FlowOptions]) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Mark a function as a flow: ``@flow`` or ``@flow(name=..., retries=..., timeout_seconds=...)``."""
    check_options(dict(options), FlowOptions, "@flow")

    def wrap(f: Callable[P, R]) -> Flow[P, R]:
        return Flow(f, **options)

    return wrap(fn) if fn is not None else wrap


def with_image(job_variables: dict[str, Any] | None, image: str | None, *,
               build: bool, push: bool) -> dict[str, Any]:
    """``job_variables`` with ``deploy(image=)`` as its ``image``; refuses what Prefect would do here
    and we do not (build or push an image), so a Prefect user is not left waiting for a build."""
    from orchestrator.errors import DeploymentError

    if build or push:
        asked = " and ".join(word for word, wanted in (("build", build), ("push", push)) if wanted)
        raise DeploymentError(f"deploy() does not {asked} images: build and push the image yourself "
                              "(e.g. docker build, docker push), then pass image='NAME:TAG' without build or push")
    variables = dict(job_variables or {})
    if image is None:
        return variables
    if not isinstance(image, str) or not image.strip():
        raise DeploymentError(f"image must be an image name such as 'repo/flows:1.0', not {image!r}")
    if variables.get("image", image) != image:
        raise DeploymentError(f"image={image!r} and job_variables['image']={variables['image']!r} disagree; give one")
    return {**variables, "image": image}
