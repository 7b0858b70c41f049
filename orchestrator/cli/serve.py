"""Serving the API: what ``orch server start`` and ``orch dev`` run once their options are parsed.

No typer here: ``cli/main.py`` serves ``orch server start`` with plain options straight from its
arguments, without loading the CLI's framework and command groups, which an API process would
hold for its whole life.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """``cli/output.fail`` without typer: the reason on one line, exit code 1 (2: an invalid setting)."""
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(code)


def serve(host: str | None = None, port: int | None = None,
          on_started: Callable[[str, Callable[[], None]], None] | None = None,
          before_exit: Callable[[], None] | None = None, processes: int | None = None) -> None:
    """Check the port, the database and the broker, each failing with one line, then serve;
    "API at" is printed once the server listens, then ``on_started(url, stop)`` runs, where
    ``stop()`` (from any thread) stops the server as a first signal does. ``before_exit`` runs (on a
    thread) when it is asked to stop, before it stops (``orch dev`` stops its worker there). ``processes``
    (default ``ORCH_SERVER_PROCESSES``): API processes serving the port (``cli/processes.py``)."""
    import gc

    # The start allocates ~130,000 objects that all live as long as the server (modules, models,
    # routes) and almost no garbage: the collector's passes over them were 15-20 % of the start's
    # CPU and found next to nothing to free. Off until the server listens, then what exists is
    # frozen (never scanned again) and the collector runs as usual for what the server allocates.
    gc.disable()
    _leave_out_pydantic_v1()
    try:
        _start_and_serve(host, port, on_started, before_exit, processes)
    finally:
        gc.enable()  # also after a start that failed (a caller in this process goes on)


def _leave_out_pydantic_v1() -> None:
    """FastAPI refuses pydantic v1 models: for each annotation of each route it imports
    ``pydantic.v1`` to compare with its ``BaseModel`` (23 modules, ~1.6 MB of an idle server and
    ~12 ms of its start), a comparison that cannot succeed here, as the API has no v1 model. Marked
    as not importable in the API's process, the check answers "not a v1 model" at once, as it does
    where ``pydantic.v1`` does not exist (pydantic on Python 3.14). Left alone if already imported."""
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]


def _openapi_models_deferred() -> None:
    """FastAPI's models of an OpenAPI document (``fastapi.openapi.models``: 36 pydantic models, the
    recursive ``Schema`` among them) are built when it is imported, a validator and a serializer each
    (~1.6 MB of an idle server), though only ``/api/openapi.json`` (and a security scheme's model)
    uses them. Imported here with pydantic's ``defer_build``, each is built at its first use instead:
    the document is the same, built by the same models. pydantic reads a new model's configuration
    from its bases' ``model_config`` when the class is created, so ``BaseModel``'s is extended for
    this one import only (FastAPI's own ``model_config`` of these models merges onto it). Left alone
    if already imported (a caller in this process imported FastAPI)."""
    if "fastapi.openapi.models" in sys.modules:
        return
    import pydantic

    config = pydantic.BaseModel.model_config
    pydantic.BaseModel.model_config = {**config, "defer_build": True}
    try:
        import fastapi.openapi.models  # noqa: F401
    finally:
        pydantic.BaseModel.model_config = config


def _start_and_serve(host: str | None, port: int | None, on_started: Callable[[str, Callable[[], None]], None] | None,
                     before_exit: Callable[[], None] | None, processes: int | None) -> None:
    import gc

    from orchestrator.cli import checks
    from orchestrator.cli import processes as api_processes
    from orchestrator.settings import Settings, checked_port, redacted

    settings = Settings()
    host = host or settings.server_host
    try:
        port = checked_port(settings.server_port if port is None else port)
    except ValueError as error:
        fail(f"--port: {error}")
    processes = settings.server_processes if processes is None else processes
    if not 1 <= processes <= (most := checks.max_processes()):  # the setting's way in (the option's is checked)
        fail(f"invalid setting: ORCH_SERVER_PROCESSES: {processes}; give 1 to {most} ({checks.PROCESSES_PER_CPU} per "
             "CPU of this machine)", code=2)
    if processes > 1:
        if not settings.resolved_database_url.startswith("postgresql"):
            fail(f"--processes {processes} (ORCH_SERVER_PROCESSES) needs PostgreSQL (ORCH_DATABASE_URL): with "
                 "SQLite one process writes at a time and the processes could not tell each other of changes "
                 "(PostgreSQL's LISTEN/NOTIFY does); use 1 process")
        unsupported = api_processes.supported()
        if unsupported:
            fail(f"--processes {processes}: {unsupported}; use 1 process")
    listening = _listen(host, port)
    others = api_processes.Processes()
    try:
        # The database's check (connect, and on a new database the schema: ~100-200 ms, mostly
        # PostgreSQL's) runs on a thread while this one imports the API (~0.5 s of CPU). The tables'
        # models are imported first: what the check imports after them (the driver, alembic for
        # an upgrade) imports nothing of the API's.
        from orchestrator.server.db import final_counts, models  # noqa: F401
        from orchestrator.server.db.session import checked_engine

        checked = _in_background(checked_engine, settings.resolved_database_url)
        _openapi_models_deferred()  # before anything imports FastAPI
        import uvicorn  # noqa: F401 (imported while the database is checked; used by _config)

        from orchestrator.server.api.app import create_app
        from pools.broker import BrokerUnavailable

        engine = checked()  # at head, its connection kept for the app's first use
        if processes > 1:
            engine.dispose()  # no connection shared across the fork: each process makes its own engine
            gc.freeze()  # the imports' objects: never scanned, so their pages stay shared with the forks
            index = others.fork(processes)
            if index:
                _serve_forked(settings, listening, create_app, host, port)
        try:
            # checked() brought it to head
            application = create_app(settings, database_checked=True, engine=engine if processes == 1 else None)
        except OSError as error:  # ORCH_HOME cannot be created (the embedded broker's file lives there)
            fail(f"cannot use ORCH_HOME {settings.home_dir}: {error}")
        broker = application.state.ctx.broker
        try:
            broker.identity()  # reaches it (a few seconds at most) and stores the id workers check
        except BrokerUnavailable as error:
            fail(f"cannot use the broker at {redacted(broker.url)}: {error}")
        server = _server_class()(_config(application, host, port))
        url = f"http://{host}:{port}/api"

        def started() -> None:
            gc.freeze()
            gc.enable()
            print(f"orchestrator API at {url} (docs: /api/docs; web UI: http://{host}:{port}/)", flush=True)
            if on_started is not None:
                on_started(url, server.ask_to_stop)

        server.on_started, server.before_exit = started, before_exit
        if others.pids:
            def stop_others() -> None:
                others.stop()
                if before_exit is not None:
                    before_exit()

            def one_ended(pid: int, code: int) -> None:
                print(f"API process {pid} exited with code {code}: the server stops", file=sys.stderr, flush=True)
                ended.append(code)
                server.should_exit = True

            ended: list[int] = []
            server.before_exit = stop_others
            others.watch(one_ended)
        server.run(sockets=[listening])
        if others.pids and ended:
            raise SystemExit(1)
    finally:
        if others.pids:
            others.stop()  # the server stopped on its own, or a second signal cut the first stop short
        listening.close()


def _serve_forked(settings: Any, listening: socket.socket, create_app: Callable[..., Any], host: str,
                  port: int) -> None:
    """A forked API process (``cli/processes.py``): its own application (engine, broker, hub and
    the background services, as a replica), serving the inherited socket; it leaves with
    ``os._exit``, never returning into the first process's code. "API at" is the first one's to print."""
    import gc
    import traceback

    code = 1
    try:
        application = create_app(settings, database_checked=True)  # the first process checked it
        application.state.ctx.broker.identity()
        config = _config(application, host, port)
        server = _server_class()(config)

        def started() -> None:
            gc.freeze()
            gc.enable()

        server.on_started = started
        server.run(sockets=[listening])
        code = 0 if server.started else 3  # 3: uvicorn's exit code for a failed startup
    except BaseException:  # noqa: BLE001 (this process ends here; the first one sees the code)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _config(application: Any, host: str, port: int) -> Any:
    import uvicorn

    # Long-polls (run waits, workers' cancellation channels) would hold a graceful shutdown for
    # their whole timeout; clients reconnect, so cut them after a few seconds. ws="none": the API
    # has no WebSocket route, so uvicorn need not look for (and load) an installed websockets.
    return uvicorn.Config(application, host=host, port=port, log_level="warning", access_log=False,
                          timeout_keep_alive=75, timeout_graceful_shutdown=3, ws="none")


def _in_background(function: Callable[[str], T], argument: str) -> Callable[[], T]:
    """Start ``function(argument)`` on a thread; the returned function waits for it and returns what
    it returned, or raises what it raised."""
    raised: list[BaseException] = []
    returned: list[T] = []

    def run() -> None:
        try:
            returned.append(function(argument))
        except BaseException as error:  # noqa: BLE001 (handed to the waiting thread, which raises it)
            raised.append(error)

    thread = threading.Thread(target=run, name="check-database", daemon=True)
    thread.start()

    def wait() -> T:
        thread.join()
        if raised:
            raise raised[0]
        return returned[0]

    return wait


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound here so that a port in use is one line before anything
    starts (uvicorn serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        hint = "; another program listens there: pass --port or set ORCH_SERVER_PORT" \
            if error.errno == errno.EADDRINUSE else ""
        reason = os.strerror(error.errno) if error.errno else str(error)
        fail(f"cannot listen on {host}:{port}: {reason}{hint}")


def _server_class() -> type[Any]:
    import asyncio
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    class Server(uvicorn.Server):
        """``on_started`` runs once the server listens. uvicorn re-raises SIGTERM/SIGINT after
        shutting down, which would kill this process before ``orch dev`` stops its worker; here a
        signal (SIGHUP too: a closed terminal) just ends ``run()``, after ``before_exit`` (on a
        thread: the handler must not block the event loop). A second signal stops at once.

        uvicorn's main loop wakes every 0.1 s to look at ``should_exit`` (and once a second of
        those sets the ``Date`` header): ten wake-ups a second of an idle server, ~1.5 ms of its
        CPU a second (bench/RESULTS.md, issue 22, "The server's CPU outside its routes"). Here
        setting ``should_exit`` wakes the loop, which otherwise ticks once a second, for the
        ``Date`` header (its resolution is a second anyway)."""

        on_started: Callable[[], None] | None = None
        before_exit: Callable[[], None] | None = None
        _stopping = False
        _exit_asked = False
        _wake: Callable[[], None] | None = None  # set while main_loop runs

        @property  # type: ignore[override]
        def should_exit(self) -> bool:
            return self._exit_asked

        @should_exit.setter
        def should_exit(self, value: bool) -> None:
            self._exit_asked = value
            wake = self._wake
            if value and wake is not None:
                wake()

        async def main_loop(self) -> None:
            loop = asyncio.get_running_loop()
            woken = asyncio.Event()

            def wake() -> None:  # from any thread, or a signal handler
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                    loop.call_soon_threadsafe(woken.set)

            self._wake = wake
            try:
                while not await self.on_tick(0):  # tick 0: the Date header each time
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), 1.0)
            finally:
                self._wake = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.on_started is not None:  # listening, migrations done
                self.on_started()

        def ask_to_stop(self) -> None:
            """Stop as a first signal does (``before_exit``, then the server); from any thread."""
            self.stop(signal.SIGTERM, None)

        def stop(self, _sig: int, _frame: object) -> None:
            if self.should_exit or self._stopping:  # a second signal: stop now
                self.should_exit = self.force_exit = True
                return
            if self.before_exit is None:
                self.should_exit = True
                return
            self._stopping = True

            def then_exit() -> None:
                try:
                    self.before_exit()  # type: ignore[misc]
                finally:
                    self.should_exit = True

            threading.Thread(target=then_exit, name="before-exit", daemon=True).start()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
            previous = {sig: signal.signal(sig, self.stop) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server
