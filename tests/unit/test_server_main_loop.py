"""The API server's main loop (``orch server start``'s ``uvicorn.Server``, cli/serve.py): it
sleeps until asked to stop, ticking once a second for the ``Date`` header, where uvicorn's own
loop wakes every 0.1 s; and a stop asked from another thread ends it at once."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from orchestrator.cli.serve import _config, _server_class
from tests.harness import thread_wakeups, wait_until


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least ASGI application: its lifespan, and a 204 for any request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_an_idle_server_sleeps_and_a_stop_wakes_it_at_once() -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    server = _server_class()(_config(_app, "127.0.0.1", listening.getsockname()[1]))
    loop_thread = threading.main_thread().native_id  # served here: only the main thread takes signals
    seen: dict[str, float] = {}

    def watch() -> None:
        try:
            wait_until("the server to start", lambda: server.started, 20, 0.01)
            before = thread_wakeups(loop_thread)
            time.sleep(1.5)  # the time over which an idle loop is measured, not a wait for an event
            seen["wakeups"] = thread_wakeups(loop_thread) - before
        finally:
            seen["asked"] = time.monotonic()
            server.should_exit = True  # as a signal's handler or ``ask_to_stop``'s thread sets it

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
    stopped = time.monotonic()
    watcher.join(10)
    assert seen["wakeups"] <= 4  # uvicorn's tick: 15
    assert stopped - seen["asked"] < 0.5  # at once, not at the next tick a second on
