"""The embedded broker (kombu's SQLAlchemy transport on a SQLite file shared by the server and the
workers, pools/sqla_transport.py): a queue another process creates between a process's look for it
and its own insert is taken, not a UNIQUE violation that kills a worker (seen: a worker starting on
a new pool while the server published its first run)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, text

from pools.broker import celery_app

QUEUE = "orch/pool/local/default"


def test_a_queue_another_process_made_meanwhile_is_taken(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with celery_app(url).connection_for_write() as connection:
        channel = connection.default_channel
        channel._get_or_create("warm-up")  # kombu has made its tables
        other_process = create_engine(f"sqlite:///{tmp_path / 'broker.db'}")

        @event.listens_for(channel.session, "before_flush", once=True)
        def meanwhile(*_: object) -> None:  # after this process looked (no row), before it inserts
            with other_process.begin() as other:
                other.execute(text("INSERT INTO kombu_queue (name) VALUES (:name)"), {"name": QUEUE})

        queue = channel._get_or_create(QUEUE)
        with other_process.connect() as other:
            made = other.execute(text("SELECT id FROM kombu_queue WHERE name = :name"), {"name": QUEUE}).all()
        other_process.dispose()
    assert [row.id for row in made] == [queue.id]
