"""``orch worker start``: serve a work pool (``start_worker``), and its options read straight from the
command line (``worker_start_options``), so that ``cli/main.py`` starts a worker without typer and the
CLI's command groups, which the worker process would otherwise hold for its whole life for nothing:
~1.5 MB of its idle RSS (bench/RESULTS.md, "The worker tree's idle memory: ..."). ``cli/worker.py``'s
typer command calls the same ``start_worker``; anything the parse here is not sure of goes to typer.

Nothing but the standard library is imported here at module level: ``cli/main.py`` imports this
module for every ``orch`` command.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, TypedDict

from orchestrator.cli.checks import MAX_RUNS_AT_ONCE
from orchestrator.cli.plain_options import option_values

if TYPE_CHECKING:
    from orchestrator.client import Client
    from workers.base import BaseWorker
    from workers.forkserver import StartedServer

# How long ``orch worker start`` waits for an API that does not answer yet (a worker started
# alongside its server), and then how long a running worker rides out an API outage per request.
START_WAIT_SECONDS = 30.0
DEFAULT_LIMIT = 10
# The worker's own keys: never in its fork server's memory nor any flow-run process's environment
# (``workers/forkserver.py`` has the same list for the processes it starts).
WORKER_KEYS = ("ORCH_API_KEY", "ORCH_SERVER_API_KEYS")
KEYS_FD = "ORCH_WORKER_KEYS_FD"  # the descriptor the keys wait in, across ``_without_keys``'s exec


class WorkerStartOptions(TypedDict):
    """``start_worker``'s arguments, as typer gives them to ``cli/worker.py``'s ``start``."""

    pool: str
    type_: str | None
    queue: list[str]
    limit: int
    name: str | None


def worker_start_options(argv: list[str]) -> WorkerStartOptions | None:
    """``start_worker``'s arguments when ``argv`` is ``worker start`` followed only by its options
    (``--opt value``, ``--opt=value``, ``-p value``; values not starting with ``-``; ``--limit`` in
    plain digits, 1 to ``MAX_RUNS_AT_ONCE``; ``--pool`` given), as typer would parse them (the last of a repeated
    option wins, ``--queue`` accumulates); None for anything else, which typer parses."""
    if argv[:2] != ["worker", "start"]:
        return None
    options = WorkerStartOptions(pool="", type_=None, queue=[], limit=DEFAULT_LIMIT, name=None)
    pool_given = False
    pairs = option_values(argv[2:])
    if pairs is None:
        return None
    for option, value in pairs:
        if option in ("--pool", "-p"):
            options["pool"], pool_given = value, True
        elif option in ("--type", "-t"):
            options["type_"] = value
        elif option in ("--queue", "-q"):
            options["queue"].append(value)
        elif option == "--name":
            options["name"] = value
        elif option == "--limit" and value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_RUNS_AT_ONCE:
            options["limit"] = int(value)
        else:
            return None
    return options if pool_given else None  # without --pool, typer says the option is missing


def expand_host(name: str, hostname: str | None = None) -> str:
    """``name`` with Celery's host placeholders filled in, as ``celery worker -n worker1@%h`` does:
    ``%h`` the host name, ``%n`` its part before the first dot, ``%d`` the part after it. A name
    cannot contain ``%`` otherwise, so ``--name process-%h`` gives each container or pod of a
    scaled service a name of its own (its host name), stable across restarts of the container,
    and ``orch worker check --name process-%h`` in the same container asks about that same name."""
    if "%" not in name:
        return name
    host = hostname if hostname is not None else socket.gethostname()
    short, _, domain = host.partition(".")
    return name.replace("%h", host).replace("%n", short).replace("%d", domain)


def _reach_api(api: Client) -> Client:
    """The API answers, or the user hears at once that it does not: one line, then retries for
    ``START_WAIT_SECONDS``, then the error (exit 1), as Celery says so when its broker is down."""
    from orchestrator.errors import ServerUnreachable, ServiceUnavailable

    try:
        api.health()
    except (ServerUnreachable, ServiceUnavailable) as error:
        said = (
            error.detail
            if isinstance(error, ServerUnreachable)
            else f"the API at {api.api_url}: {error.detail}"
        )
        print(f"{said}; retrying for up to {START_WAIT_SECONDS:.0f} s", file=sys.stderr, flush=True)
        api.retry_seconds = START_WAIT_SECONDS
        api.health()
    api.retry_seconds = START_WAIT_SECONDS
    return api


def start_worker(pool: str, type_: str | None, queue: list[str], limit: int, name: str | None) -> None:
    """Serve a work pool: claim its due runs and start their infrastructure. A refusal is an
    ``OrchestratorError`` (``cli/main.py`` prints it as one line, exit 1)."""
    # In the fork server, this call never returns (nor do its children's): it is outside the
    # ``try``, so their ``sys.exit`` runs none of this worker's cleanup.
    started = _fork_server_beside(type_)
    try:
        _serve(pool, type_, queue, limit, name, started)
    finally:
        if started is not None and started.returncode is None and not started.adopted:
            started.close()  # the start failed before a worker took it


def _serve(pool: str, type_: str | None, queue: list[str], limit: int, name: str | None,
           started: StartedServer | None) -> None:
    import logging

    from orchestrator import schemas
    from orchestrator.client import Client
    from orchestrator.errors import Conflict, NotFound, OrchestratorError
    from orchestrator.settings import Settings
    from workers.broker import broker_url_for_worker
    from workers.celery_worker import serve, stop_before_serving
    from workers.registry import KINDS, unknown_kind, worker_class

    settings = Settings()
    name = expand_host(name) if name is not None else None
    for what, value in (("work pool", pool), ("worker", name)):
        if value is not None and (why := schemas.name_problem(value)) is not None:
            raise OrchestratorError(f"invalid {what} name {value!r}: {why}")
    if type_ is not None and type_ not in KINDS:
        raise OrchestratorError(unknown_kind(type_))
    api = _reach_api(Client.from_settings(settings))
    # Before the pool is created or the worker shows ONLINE: refused on another broker than the server's.
    broker_url = broker_url_for_worker(api, settings)
    try:
        work_pool = api.read_work_pool(pool)
    except NotFound:
        if type_ is None:
            raise OrchestratorError(
                f"work pool '{pool}' not found; create it or pass --type to create it"
            ) from None
        try:
            work_pool = api.create_work_pool(schemas.WorkPoolCreate(name=pool, type=type_))
        except Conflict:
            work_pool = api.read_work_pool(pool)
    if type_ is not None and type_ != work_pool.type:
        raise OrchestratorError(f"work pool '{pool}' is of type '{work_pool.type}', not '{type_}'")
    try:
        cls = worker_class(work_pool.type)
    except KeyError as error:
        raise OrchestratorError(str(error.args[0])) from None
    known = [q.name for q in api.list_work_queues(pool)]  # by priority, 1 first
    unknown = sorted(set(queue) - set(known))
    if unknown:
        raise OrchestratorError(
            f"work queue(s) {', '.join(unknown)} not in pool '{pool}' (has: {', '.join(known)})"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = settings.api_key.get_secret_value() if settings.api_key else None
    options: dict[str, object] = {"prewarm": settings.worker_prewarm} if work_pool.type == "process" else {}
    if started is not None and options.get("prewarm"):
        options["fork_server"] = started
    elif started is not None:  # not a process pool, or no fork server wanted: not kept idle for nothing
        started.close()
    worker = cls(
        api,
        pool=pool,
        name=name,
        limit=limit,
        heartbeat_seconds=settings.worker_heartbeat_seconds,
        cancel_grace_seconds=settings.worker_cancel_grace_seconds,
        api_url=settings.api_url,
        api_key=key,
        **options,
    )
    stop_before_serving(worker.name)  # a SIGTERM from here on: one line, as once serving
    _claim_name(worker)  # the name is this worker's from here on, or held by a live one: then nothing starts
    queues = [name for name in known if name in queue] if queue else known  # keep the priority order
    print(
        f"worker {worker.name} serving pool '{pool}' ({work_pool.type}), queues {', '.join(queues)}, "
        f"limit {limit}",
        flush=True,
    )
    serve(worker, broker_url=broker_url, queue_names=queues, follow_new_queues=not queue)
    if worker.lost_name is not None:  # its log said why; the exit says it failed
        raise OrchestratorError(f"{worker.lost_name.detail}; this worker stopped")


def _claim_name(worker: BaseWorker) -> None:
    """The worker's first heartbeat. Refused because a worker that is ONLINE holds the name: at once
    (one line, exit 1) while that holder beats; but a holder that has been silent longer than it
    has left before it is OFFLINE has most likely died -- this worker's previous life, restarted
    under its stable name after a crash or a lost host (a dropped connection makes it so within 2 s
    of the kill) -- so the name is waited for, once, instead of failing into a restart loop."""
    from orchestrator.errors import Conflict, OrchestratorError, WorkerNameTaken

    waited = False
    while True:
        try:
            worker.claim_name()
            return
        except WorkerNameTaken as error:
            if waited or error.silent_seconds <= error.free_in_seconds:
                raise OrchestratorError(f"{error.detail}; choose another with --name") from None
            print(f"worker name '{worker.name}' in pool '{worker.pool}' is held by a worker silent for "
                  f"{error.silent_seconds:.0f} s (a previous life of this one?); waiting up to "
                  f"{error.free_in_seconds:.0f} s for it to go OFFLINE", file=sys.stderr, flush=True)
            time.sleep(error.free_in_seconds + 0.25)
            waited = True
        except Conflict as error:  # an older server's refusal, which says nothing of the holder
            raise OrchestratorError(f"{error.detail}; choose another with --name") from None


def _fork_server_beside(type_: str | None) -> StartedServer | None:
    """A process worker's fork server, forked from this process before Celery, the settings or the
    keys are in it (``runtime.forkserver_beside.fork_server_beside``): the two then share the pages of what
    both import (pydantic, the wire models, the client), ~14 MB of private memory in all, instead of
    each holding its own
    (bench/RESULTS.md, "The worker tree's idle memory, round 4"). Its environment must not carry
    the worker's keys, so if this process was started with them, it first becomes a fresh
    interpreter without them (``_without_keys``: same pid, same command line) and reads them back
    after the fork. None for another kind of pool, or under typer's ``orch worker start``
    (``cli/worker.py``, for options only typer can judge), whose fork server would hold typer:
    the worker starts a fresh fork server then, as it always did."""
    if type_ not in (None, "process") or "typer" in sys.modules:
        return None
    if any(key in os.environ for key in WORKER_KEYS):
        _without_keys()  # returns only if the exec failed: then a fresh fork server, later
        return None
    keys_fd = os.environ.pop(KEYS_FD, None)
    from orchestrator.runtime.forkserver_beside import fork_server_beside

    forked = fork_server_beside()  # in the fork server, this never returns
    if keys_fd is not None:
        os.environ.update(_read_keys(int(keys_fd)))
    if forked is None:
        return None
    from workers.forkserver import StartedServer

    return StartedServer(*forked)


def _without_keys() -> None:
    """Exec this same command again without the worker's keys in its environment, the keys in a
    pipe whose descriptor ``KEYS_FD`` names (read back by ``_fork_server_beside`` after its fork).
    The environment a process starts with stays in its memory and in ``/proc/<pid>/environ`` for
    its whole life, and a fork copies it: this is the one way for the fork server not to hold them."""
    keys = {key: os.environ[key] for key in WORKER_KEYS if key in os.environ}
    read_end, write_end = os.pipe()  # the keys are far below a pipe's buffer
    try:
        os.write(write_end, json.dumps(keys).encode())
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    env = {k: v for k, v in os.environ.items() if k not in WORKER_KEYS}
    env[KEYS_FD] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError as error:
        os.close(read_end)
        print(f"could not restart without the keys in the environment ({error}); the fork server is "
              f"started afresh", file=sys.stderr, flush=True)


def _read_keys(fd: int) -> dict[str, str]:
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    finally:
        os.close(fd)
    keys: dict[str, str] = json.loads(data)
    return {key: value for key, value in keys.items() if key in WORKER_KEYS}
