"""The logger a flow writes to; the flow-run process ships its records to the API."""

from __future__ import annotations

import logging

RUN_LOGGER = "orchestrator.flow_run"


def get_run_logger() -> logging.Logger:
    return logging.getLogger(RUN_LOGGER)
