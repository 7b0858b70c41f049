"""What the worker's processes load (issue 22: idle memory of the worker's process tree).

A process worker is two long-lived processes: ``orch worker start`` (Celery on Redis) and its fork
server (``python -m orchestrator.engine --fork-server``). Each module either one imports stays
resident for the worker's life, so neither may load the server's stack (SQLAlchemy, FastAPI, the
API's code), and the fork server, which every flow-run process is forked from, none of the
worker's (Celery, kombu, redis-py, the CLI). Each check runs in a fresh interpreter. (On the embedded
broker the worker does load SQLAlchemy: kombu's SQLAlchemy transport is that broker.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

from tests.forks import LIBCRYPTO, fork_server_modules, libcrypto_pydantic_loads

REPO = Path(__file__).resolve().parents[2]
SERVER_SIDE = ["sqlalchemy", "fastapi", "starlette", "uvicorn", "alembic", "psycopg", "orchestrator.server"]
WORKER_SIDE = ["celery", "kombu", "redis", "billiard", "typer", "click", "workers", "pools"]

# What ``orch worker start --pool P`` imports for a process pool on Redis, up to a Celery worker
# built and ready to start (``orchestrator/cli/worker.py``, ``workers/celery_worker.py``), then what
# handling a run adds (``BaseWorker.render_job``, the events).
WORKER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")  # Celery's warning about running as root, in some test environments
import orchestrator.cli.commands  # what `orch worker start` loads (cli/main.py runs it)
from orchestrator import schemas
from orchestrator.client import Client
from orchestrator.settings import Settings
from pools.broker import celery_app
from workers.broker import broker_url_for_worker
from workers.celery_worker import serve
from workers.registry import worker_class

worker_class("process")
app = celery_app("redis://127.0.0.1:1/0", name="orchestrator-worker-p")
app.Worker(queues=["q"], concurrency=2, pool="threads", hostname="w@orchestrator", loglevel="WARNING", quiet=True,
           without_gossip=True, without_mingle=True, without_heartbeat=True, optimization="fair")
import job_templates.render, job_templates.secret_env, orchestrator.emitting
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(modules: Collection[str], candidates: list[str]) -> list[str]:
    return [c for c in candidates if c in modules]


def test_the_worker_process_never_loads_the_server_side() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    assert "celery.worker" in modules and "kombu.transport.redis" in modules  # it did build the worker
    assert _loaded(modules, SERVER_SIDE) == []


def test_the_fork_server_loads_neither_the_server_nor_the_worker_side() -> None:
    modules = fork_server_modules()
    assert "orchestrator.runtime.engine" in modules and "pydantic" in modules  # what every run needs, preloaded
    assert _loaded(modules, SERVER_SIDE + WORKER_SIDE) == []


def test_the_fork_server_holds_no_idna_codec_and_no_masking() -> None:
    # A run's connections look the API's host up as bytes (``plain_http.lookup_name``), so neither
    # the fork server nor a run needs the idna codec (``encodings.idna``, ``stringprep``,
    # ``unicodedata``: ~0.2 MB of the idle fork server's RSS); the masking of job variables is the
    # worker's, before it hands a claim over.
    idna = ["encodings.idna", "stringprep", "unicodedata"]
    assert _loaded(fork_server_modules(), [*idna, "orchestrator.masking"]) == []


def test_the_fork_server_loads_no_tls() -> None:
    # The client reaches an http:// API without http.client, whose import loads ssl and libssl (1.4 MB
    # of RSS in the fork server); only an https:// API's connections load them.
    assert _loaded(fork_server_modules(), ["ssl", "_ssl", "http.client"]) == []


def test_the_fork_server_maps_no_libcrypto_beyond_what_pydantic_does() -> None:
    # hashlib loads _hashlib, linked to libcrypto (3.3 MB of resident pages in the idle fork server),
    # not for each run's one SHA-256 of its flow's source, which CPython's own implementation computes;
    # only a pydantic that imports it itself (2.14 does) brings it in.
    assert _loaded(fork_server_modules(), LIBCRYPTO) == libcrypto_pydantic_loads()


def test_the_fork_server_leaves_pull_steps_to_the_runs_that_have_them() -> None:
    # Only a deployment with pull steps runs them; the engine imports them for such a run, so the
    # fork server every run is forked from holds neither them nor the subprocess module they use.
    assert _loaded(fork_server_modules(), ["orchestrator.runtime.pull_steps", "subprocess"]) == []
