"""``orch worker check``: a probe for container healthchecks and Kubernetes liveness/readiness.

Exit 0 when the API answers (and the pool is readable with this installation's key) and, with
``--name``, when that worker is ONLINE in the pool, i.e. it sent a heartbeat recently. ``--name``
takes the host placeholders of ``orch worker start --name`` (``%h``...), so a container's probe
asks about the name its worker took. Anything
else is one line on stderr and exit 1, which is all a probe needs.
"""

from __future__ import annotations

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import fail


def check(
    pool: str = typer.Option(..., "--pool", "-p", help="Work pool the worker serves."),
    name: str = typer.Option(None, "--name", help="Also require this worker to be ONLINE in the pool (%h: this "
                             "host's name, as in orch worker start --name)."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, callback=checks.finite,
                                  help="Seconds to wait for the API."),
) -> None:
    """Exit 0 when the API answers and, with --name, that worker is ONLINE in the pool."""
    from orchestrator.cli.worker_start import expand_host
    from orchestrator.client import Client
    from orchestrator.errors import NotFound
    from orchestrator.settings import Settings

    name = expand_host(name) if name is not None else None
    settings = Settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    # A probe has its own deadline: fail fast rather than retry, the probe runs again anyway.
    api = Client(settings.api_url, api_key=key, timeout=timeout)
    try:
        api.health()
        try:
            api.read_work_pool(pool)
            workers = api.list_workers(pool) if name else []
        except NotFound:
            fail(f"work pool '{pool}' not found at {settings.api_url}")
    finally:
        api.close()
    if name is None:
        print(f"ok: API at {settings.api_url} answers, pool '{pool}' exists")
        return
    worker = next((w for w in workers if w.name == name), None)
    if worker is None:
        fail(f"worker '{name}' is not registered in pool '{pool}'")
    if worker.status != "ONLINE":
        seen = f"{worker.last_heartbeat:%Y-%m-%d %H:%M:%S}"
        fail(f"worker '{name}' in pool '{pool}' is {worker.status} (last heartbeat {seen})")
    print(f"ok: worker '{name}' is ONLINE in pool '{pool}'")
