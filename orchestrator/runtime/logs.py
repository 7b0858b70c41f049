"""Shipping a flow-run process's output to the API: a logging handler and the captured file
descriptors 1 and 2 (``orchestrator.runtime.output``) feed one batching thread (``LogShipper``,
``sdk/run_logs.py``), so the flow never waits on the network."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from orchestrator.sdk.run_logs import LogShipper, ShipHandler

__all__ = ["LogShipper", "RunOutput", "capture_output"]


class RunOutput:
    """Ship everything the flow logs, and everything written to file descriptors 1 and 2 (by the
    flow, its subprocesses or C code: ``orchestrator.runtime.output``), from ``start`` to ``stop``;
    all of it still reaches the console.

    A fork server's standby starts it before its order comes (``standby.get_ready``): the
    pipes, the reader thread and the streams are then set up off the run's path, while its worker
    waits for the claim, and the order's pipe becomes the console with ``take_console``."""

    def __init__(self, shipper: LogShipper) -> None:
        from orchestrator.runtime.output import OutputCapture

        levels = {1: (logging.INFO, "stdout"), 2: (logging.WARNING, "stderr")}
        self.capture = OutputCapture(lambda fd, text: shipper.add(levels[fd][0], levels[fd][1], text))
        self._handler = ShipHandler(shipper)
        self._console: logging.Handler | None = None
        self._old_level = logging.NOTSET

    def start(self) -> None:
        self.capture.start()
        # Log records reach the console through the original stderr, not descriptor 2: through the
        # pipe they would come back as a second, "stderr" copy in the logs.
        self._console = logging.StreamHandler(self.capture.console_err)
        self._console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        self._old_level = root.level
        root.addHandler(self._handler)
        root.addHandler(self._console)
        root.setLevel(logging.INFO)

    def take_console(self, fd: int) -> None:
        """``fd`` (then closed) is the console from now on, in place of the original stdout and stderr."""
        self.capture.take_console(fd)

    def stop(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self._console is not None:
            root.removeHandler(self._console)
        root.setLevel(self._old_level)
        self.capture.stop()


@contextlib.contextmanager
def capture_output(shipper: LogShipper, started: RunOutput | None = None) -> Iterator[None]:
    """``RunOutput`` while the block runs; ``started``: one a standby started already."""
    output = started
    if output is None:
        output = RunOutput(shipper)
        output.start()
    try:
        yield
    finally:
        output.stop()
