"""Every name this project uses on the broker, built here and nowhere else.

* ``orch/pool/<pool>/<queue>`` -- one Celery queue per work queue of a work pool ("/" cannot
  appear in pool or queue names, so two pools never share a queue). A message on it
  carries one flow-run id and means only "this run is due": the database stays the truth, and a
  worker must still win the claim (SCHEDULED -> PENDING) through the API before starting anything.
* ``orchestrator.run_flow`` -- the Celery task name those messages invoke on a worker.
* ``orch/broker-id`` -- the broker's identity (``pools/identity.py``): a Redis key, or on the
  embedded broker the table ``orch_broker_identity`` beside kombu's own.
"""

from __future__ import annotations

RUN_FLOW_TASK = "orchestrator.run_flow"
QUEUE_PREFIX = "orch/pool/"
BROKER_ID_KEY = "orch/broker-id"
BROKER_ID_TABLE = "orch_broker_identity"


def run_queue(pool: str, queue: str) -> str:
    """The broker queue a worker of ``pool`` consumes for its work queue ``queue``."""
    return f"{QUEUE_PREFIX}{pool}/{queue}"
