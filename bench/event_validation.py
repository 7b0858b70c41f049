"""CPU of validating ``POST /api/events`` bodies, the ingest path's per-event Python work, alone.

A body of 100 events (each with ``occurred``, as ``emit_event`` and the workers send it, 1 related
resource and a small payload) is validated as the route does (``list[EventIn]`` from JSON), many
times; prints the median process CPU time per event over ``--repeats`` runs of ``--batches`` bodies.

Usage (old vs new: alternate the code on the path):
    PYTHONPATH=<tree> python bench/event_validation.py [--batches 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid

from pydantic import TypeAdapter

from orchestrator.schemas.events import EventIn


def body(size: int) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return json.dumps([
        {"id": str(uuid.uuid4()), "occurred": (now - dt.timedelta(seconds=i)).isoformat(),
         "event": "bench.thing.happened", "payload": {"i": i},
         "resource": {"orchestrator.resource.id": f"bench.thing.{i}", "orchestrator.resource.name": "t"},
         "related": [{"orchestrator.resource.id": "orchestrator.tag.bench", "orchestrator.resource.role": "tag"}]}
        for i in range(size)]).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    adapter, data = TypeAdapter(list[EventIn]), body(100)
    adapter.validate_json(data)  # warm
    per_event = []
    for _ in range(args.repeats):
        start = time.process_time()
        for _ in range(args.batches):
            adapter.validate_json(data)
        per_event.append((time.process_time() - start) / (args.batches * 100) * 1e6)
    print(f"{statistics.median(per_event):.2f} µs CPU per event (median of {args.repeats}: "
          f"{', '.join(f'{v:.2f}' for v in per_event)})")


if __name__ == "__main__":
    main()
