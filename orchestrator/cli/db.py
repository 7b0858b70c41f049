"""``orch db prune``: delete finished runs (and task runs outside flows), logs and events older than
a duration, once.

The servers' retention service does the same on a timer from the ``ORCH_*_RETENTION`` settings;
this command is for a one-off clean-up (or an installation that leaves the settings unset and
prunes from cron). It talks to the database directly (``ORCH_DATABASE_URL``), as ``orch server
migrate`` does, in the same small committed batches, so running servers keep answering.
"""

from __future__ import annotations

import typer

from orchestrator.cli import checks
from orchestrator.cli.output import fail

app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@app.command("prune")
def prune(
    older_than: str = typer.Option(..., "--older-than", metavar="DURATION", callback=checks.older_than,
                                   help="Delete what is older than this: 30d, 12h, 3600 (seconds) or P30D; "
                                   "at most 36500d."),
    runs: bool = typer.Option(False, "--runs", help="Finished runs (a final state, by end time) with their "
                              "states, logs and task runs; finished task runs of tasks called outside a flow."),
    logs: bool = typer.Option(False, "--logs", help="Log lines (their runs stay)."),
    events: bool = typer.Option(False, "--events", help="Events."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
) -> None:
    """Delete finished runs, logs and events older than --older-than (all three unless some are named)."""
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.server.db.session import make_engine, make_sessionmaker
    from orchestrator.server.db.types import utcnow
    from orchestrator.server.retention import prune as prune_kind
    from orchestrator.server.services.retention import count_older
    from orchestrator.settings import Settings, redacted

    age = checks.age(older_than)
    # --runs: the runs' rule, also for the task runs no flow run takes with it.
    groups = {"runs": ("runs", "task_runs"), "logs": ("logs",), "events": ("events",)}
    named = [kind for (group, kinds), wanted in zip(groups.items(), (runs, logs, events), strict=True) if wanted
             for kind in kinds]
    every = [kind for kinds in groups.values() for kind in kinds]
    cutoff = utcnow() - age
    shown = cutoff.isoformat(timespec="seconds")
    url = Settings().resolved_database_url
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        for kind in named or every:
            what = kind.replace("_", " ")
            if dry_run:
                with sessions() as session:
                    print(f"would delete {count_older(session, kind, cutoff)} {what} older than {shown}")
            else:
                print(f"deleted {prune_kind(sessions, kind, cutoff)} {what} older than {shown}")
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        fail(f"cannot prune the database at {redacted(url)}: {reason} (is it the server's ORCH_DATABASE_URL, "
             "migrated by `orch server migrate`?)")
    finally:
        engine.dispose()
