"""Deploy the benchmark's flows to a Prefect server (run with the Prefect venv's python, in a copy of
this folder): ``noop/bench`` and ``sleeper/bench`` on pool ``bench`` (served by a process worker),
``noop/idle`` on pool ``idle`` (no worker: the create-run API test's runs wait there).

Uses ``flow.from_source(<local folder>)`` + ``.deploy()``: no image, nothing pushed or pulled.
Prints ``{"noop": id, "sleeper": id, "idle": id}`` as the last line.
"""

import json
import os

from prefect import flow

here = os.getcwd()
ids = {
    "noop": flow.from_source(source=here, entrypoint="flows.py:noop").deploy(
        name="bench", work_pool_name="bench", print_next_steps=False, ignore_warnings=True),
    "sleeper": flow.from_source(source=here, entrypoint="flows.py:sleeper").deploy(
        name="bench", work_pool_name="bench", print_next_steps=False, ignore_warnings=True),
    "idle": flow.from_source(source=here, entrypoint="flows.py:noop").deploy(
        name="idle", work_pool_name="idle", print_next_steps=False, ignore_warnings=True),
}
print(json.dumps({k: str(v) for k, v in ids.items()}))
