"""A SIGTERM before the worker serves (``workers/celery_worker.stop_before_serving``) ends it, even
when it comes while the main thread is inside a weakref callback or a ``__del__``, where Python
ignores an exception raised from a signal's handler (a garbage collection can run one at any time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The SIGTERM is sent from inside a weakref callback, so its handler runs there.
PROGRAM = """
import os, signal, weakref
from workers.celery_worker import stop_before_serving

stop_before_serving("w1")

class Held:
    pass

def collected(_ref):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100000):  # the handler runs at one of these instructions, in this callback
        pass

held = Held()
ref = weakref.ref(held, collected)
del held
print("served on", flush=True)
"""


def test_a_sigterm_before_serving_ends_the_worker_even_inside_a_weakref_callback() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROGRAM], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "served on" not in done.stdout
    assert done.stderr.strip().splitlines() == ["worker w1 stopping: its running flow runs finish first"]
