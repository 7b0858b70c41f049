"""``orch server start`` and ``orch dev``: their options; the serving is ``cli/serve.py``'s."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import typer

from orchestrator.cli import checks, migrate
from orchestrator.cli.serve import serve

app = typer.Typer(help="Run the API server and its background services.", no_args_is_help=True)
app.command("migrate")(migrate.migrate)


@app.command("start")
def start(
    host: str = typer.Option(None, help="Address to bind (ORCH_SERVER_HOST, default 127.0.0.1)."),
    port: int = typer.Option(None, min=1, max=65535, help="Port to bind (ORCH_SERVER_PORT, default 4300)."),
    processes: int = typer.Option(None, min=1, callback=checks.processes,
                                  help="API processes serving the port (ORCH_SERVER_PROCESSES, default 1); more than "
                                  f"1 needs PostgreSQL; at most {checks.PROCESSES_PER_CPU} per CPU."),
) -> None:
    """Start the API and its background services (scheduler, dispatcher, reaper, triggers, retention);
    migrations run first."""
    serve(host, port, processes=processes)


def dev(
    host: str = typer.Option(None, help="Address to bind."),
    port: int = typer.Option(None, min=1, max=65535, help="Port to bind."),
    # Checked here, before the server starts: the bundled worker would refuse it only once it is up.
    limit: int = typer.Option(10, min=1, max=checks.MAX_RUNS_AT_ONCE,
                              help=f"Concurrent runs of the bundled process worker (1 to {checks.MAX_RUNS_AT_ONCE})."),
) -> None:
    """Everything on one machine: API + services + a process worker for pool 'default'."""
    worker: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()  # set once orch dev stops the worker itself
    worker_failed: list[int] = []

    def start_worker(api_url: str, stop_server: Callable[[], None]) -> None:
        env = {**os.environ, "ORCH_API_URL": api_url}
        # Its own process group: Ctrl-C in the terminal reaches only this process, which stops the
        # worker first, while the API still takes its last reports, and the server after it.
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.main", "worker", "start", "--pool", "default",
             "--type", "process", "--limit", str(limit)],
            env=env, process_group=0,
        )
        worker.append(process)

        def watch() -> None:
            # A server whose worker is gone would take runs that nothing runs, without a word.
            code = process.wait()
            if not stopping.is_set():
                worker_failed.append(code)
                print(f"Error: the bundled worker of pool 'default' exited with code {code} (its reason is "
                      "above); orch dev stops", file=sys.stderr, flush=True)
                stop_server()

        threading.Thread(target=watch, name="bundled-worker", daemon=True).start()

    def stop_worker() -> None:
        stopping.set()  # the worker says it stops (one line: its running flow runs finish first)
        for process in worker:
            if process.poll() is None:
                process.terminate()  # Celery's warm shutdown: running flow runs are waited for
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    try:
        serve(host, port, on_started=start_worker, before_exit=stop_worker, processes=1)
    finally:
        stop_worker()  # the server stopped on its own, or a second Ctrl-C cut the first stop short
    if worker_failed:
        raise typer.Exit(1)
