"""``orch server start`` and ``orch dev``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import typer

from orchestrator.cli import migrate

app = typer.Typer(help="Run the API server and its background services.", no_args_is_help=True)
app.command("migrate")(migrate.migrate)


def _serve(host: str | None, port: int | None, on_started: object = None) -> None:
    import uvicorn

    from orchestrator.api.app import create_app

    _Server = _server_class()
    from orchestrator.settings import Settings

    settings = Settings()
    host = host or settings.server_host
    port = port or settings.server_port
    application = create_app(settings)
    # Long-polls (run waits, workers' cancellation channels) would hold a graceful shutdown for
    # their whole timeout; clients reconnect, so cut them after a few seconds. ws="none": the API
    # has no WebSocket route, so uvicorn need not look for (and load) an installed websockets.
    config = uvicorn.Config(application, host=host, port=port, log_level="warning", access_log=False,
                            timeout_keep_alive=75, timeout_graceful_shutdown=3, ws="none")
    server = _Server(config)
    print(f"orchestrator API at http://{host}:{port}/api (docs: /api/docs)", flush=True)
    if callable(on_started):
        def watch() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                on_started(f"http://{host}:{port}/api")
        threading.Thread(target=watch, daemon=True).start()
    server.run()


def _server_class() -> type:
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after shutting down, which would kill this process
        before ``orch dev`` stops its worker; here a signal just ends ``run()``."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


@app.command("start")
def start(
    host: str = typer.Option(None, help="Address to bind (ORCH_SERVER_HOST, default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port to bind (ORCH_SERVER_PORT, default 4300)."),
) -> None:
    """Start the API and the background services (dispatcher). Migrations run first."""
    _serve(host, port)


def dev(
    host: str = typer.Option(None, help="Address to bind."),
    port: int = typer.Option(None, help="Port to bind."),
    limit: int = typer.Option(10, help="Concurrent runs of the bundled process worker."),
) -> None:
    """Everything on one machine: API + services + a process worker for pool 'default'."""
    worker: list[subprocess.Popen[bytes]] = []

    def start_worker(api_url: str) -> None:
        env = {**os.environ, "ORCH_API_URL": api_url}
        worker.append(subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.main", "worker", "start", "--pool", "default",
             "--type", "process", "--limit", str(limit)],
            env=env,
        ))

    try:
        _serve(host, port, on_started=start_worker)
    finally:
        for process in worker:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
