"""A fork server's standby getting ready before its order (``runtime/forkserver.py``): what the
flow-run process's ``main`` (``runtime/engine.py``) needs that the order does not change, done
while the worker waits for the claim's answer, off the run's path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from orchestrator.runtime.logs import LogShipper, RunOutput

_ready: tuple[LogShipper, RunOutput] | None = None  # set up by ``get_ready``, taken by ``main``


def get_ready(api_url: str | None = None) -> Callable[[int], None] | None:
    """The output capture (two pipes, the reader thread, the streams and the log handlers: ~1-4 ms
    of the path to RUNNING on a loaded machine, ``bench/run_timeline.py``) starts here; what the
    run writes from then on is its output. Returns how the order's pipe becomes the console, or
    None when the set-up failed (nothing was kept: ``main`` does it after the order, as without a
    standby).

    ``api_url``: the API the worker named last (its prepare, or an order). The two connections the process opens
    before RUNNING (the lease's and the report's) are opened here, ahead (``connect_ahead``); an
    order for another API connects as usual."""
    global _ready
    if api_url:
        _connect_ahead(api_url)
    try:
        from orchestrator.runtime.output import console_error

        shipper = LogShipper(None, None, say=console_error)  # its client and run once the order names them
        output = RunOutput(shipper)
        output.start()
    except Exception:  # noqa: BLE001 - e.g. no descriptors left: the ordinary path still works
        return None
    _ready = (shipper, output)
    return output.take_console


def take_ready() -> tuple[LogShipper, RunOutput] | None:
    """What ``get_ready`` set up in this process (once), or None."""
    global _ready
    ready, _ready = _ready, None
    return ready


def _connect_ahead(api_url: str) -> None:
    import urllib.parse

    from orchestrator.client.plain_http import connect_ahead

    with contextlib.suppress(OSError, ValueError):  # the API is down: the run connects as usual
        parts = urllib.parse.urlsplit(api_url)
        if parts.scheme == "http" and parts.hostname:
            connect_ahead(parts.hostname, parts.port, 2)
