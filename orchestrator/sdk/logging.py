"""The logger a flow writes to; the flow-run process ships its records to the API.

A flow called directly is a run too, as in Prefect: while it runs, its INFO records (and
``log_prints``'s) reach the console (``shown_on_console``) instead of vanishing below the standard
library's default WARNING level. Outside any run there is nothing to attach records to:
``get_run_logger`` refuses, as Prefect's does.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator

from orchestrator.sdk import running

RUN_LOGGER = running.FLOW_LOGGER
_RUN_LOGGERS = (running.FLOW_LOGGER, running.TASK_LOGGER)


def get_run_logger() -> logging.Logger:
    """The run's logger, inside a flow, a task or a state hook; ``MissingContextError`` elsewhere."""
    if not running.in_a_run():
        from orchestrator.errors import MissingContextError

        raise MissingContextError("get_run_logger() was called outside a flow or task run: call it inside a "
                                  "@flow or @task function (or a state hook); elsewhere use logging.getLogger()")
    return logging.getLogger(RUN_LOGGER)


class _Console:
    """While at least one directly called flow runs: the run loggers at INFO (unless the program
    set their level), and a stderr handler on them when nothing in the program handles their
    records (a program that configured logging keeps its handlers, and sees no second copy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._undo: list[tuple[logging.Logger, logging.Handler | None, bool]] = []

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._attach()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._detach()

    def _attach(self) -> None:
        for name in _RUN_LOGGERS:
            logger = logging.getLogger(name)
            handler = None
            if not logger.hasHandlers():
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                logger.addHandler(handler)
            leveled = logger.level == logging.NOTSET
            if leveled:
                logger.setLevel(logging.INFO)
            self._undo.append((logger, handler, leveled))

    def _detach(self) -> None:
        for logger, handler, leveled in self._undo:
            if handler is not None:
                logger.removeHandler(handler)
            if leveled:
                logger.setLevel(logging.NOTSET)
        self._undo.clear()


shown_on_console = _Console().shown
