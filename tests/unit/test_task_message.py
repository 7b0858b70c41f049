"""``pools.publish.task_message`` fills texts made once per queue and origin: what it writes is
the message ``json.dumps`` writes for the same ids (test_broker_conformance.py checks that one
against Celery's ``send_task``), whatever the queue's and the origin's characters."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from pools import publish
from pools.names import RUN_FLOW_TASK


def built_whole(queue: str, run_id: uuid.UUID, origin: str, task_id: str, delivery_tag: str) -> str:
    args = [str(run_id)]
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(), "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": RUN_FLOW_TASK, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}", "origin": origin, "ignore_result": None,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0, "body_encoding": "base64", "delivery_tag": delivery_tag,
        },
    })


@pytest.mark.parametrize(("queue", "origin"), [
    ("orch/pool/p/default", "12@host"), ('orch/pool/{a}"b\\/c', "7@h{0}st"), ("orch/pool/é/ü 🙂", "1@ĥ"),
])
def test_the_message_is_the_one_json_dumps_writes(queue: str, origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, task_id, tag = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for _ in range(2):  # the first message makes the texts, the second reuses them
        monkeypatch.setattr(publish, "_random_ids", lambda: (str(task_id), str(tag)))
        message = publish.task_message(queue, run_id, origin=origin)
        assert message == built_whole(queue, run_id, origin, str(task_id), str(tag))
        assert json.loads(message)["properties"]["delivery_info"]["routing_key"] == queue


def test_the_message_ids_are_random_version_4_uuids_as_uuid4_writes_them() -> None:
    ids = [text for _ in range(2000) for text in publish._random_ids()]
    assert all(text == str(uuid.UUID(text)) and uuid.UUID(text).version == 4
               and uuid.UUID(text).variant == uuid.RFC_4122 for text in ids)
    assert len(set(ids)) == len(ids)
