"""The Prefect side's flows for bench/compare.py: the same no-op and sleeping flows as our side's."""

import time

from prefect import flow


@flow
def noop() -> None:
    pass


@flow
def sleeper(seconds: float = 600.0) -> None:
    time.sleep(seconds)
