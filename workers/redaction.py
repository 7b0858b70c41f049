"""What a worker never writes in clear: the secret values of the runs it holds.

``BaseWorker`` registers, per run, the clear texts of its secret job variables (the pool's
schema marks them, ``orchestrator/masking.py``) and of the env values it read from files
(``job_templates/secret_env.py``), and forgets them when the run is settled. ``scrub`` replaces
them by ``********`` in a line; ``install`` makes every log record of the process go through it
(a log-record factory, so it holds for any logger and handler a host such as Celery sets up), and
the workers pass the flow-run output they echo and the messages they send to the API through it.
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Iterable
from typing import Any

from orchestrator.masking import redact


class Redactor:
    """The secrets of the runs held in this process, by run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_run: dict[uuid.UUID, frozenset[str]] = {}
        self._all: frozenset[str] = frozenset()

    def add(self, run_id: uuid.UUID, texts: Iterable[str]) -> None:
        texts = frozenset(t for t in texts if t)
        if not texts:
            return
        with self._lock:
            self._by_run[run_id] = self._by_run.get(run_id, frozenset()) | texts
            self._all = frozenset().union(*self._by_run.values())

    def forget(self, run_id: uuid.UUID) -> None:
        with self._lock:
            if self._by_run.pop(run_id, None) is not None:
                self._all = frozenset().union(*self._by_run.values())

    def texts(self, run_id: uuid.UUID) -> frozenset[str]:
        """The secrets registered for one run."""
        return self._by_run.get(run_id, frozenset())

    def scrub(self, text: str) -> str:
        secrets = self._all  # one read: the set is replaced whole, never changed in place
        return redact(text, secrets) if secrets else text


REDACTOR = Redactor()
_installed = False


def install() -> None:
    """Scrub every log record made in this process from now on (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if not REDACTOR._all:
            return record
        message = record.getMessage()
        clean = REDACTOR.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatted now, scrubbed, and cached where every Formatter looks first.
            record.exc_text = REDACTOR.scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(scrubbed)
