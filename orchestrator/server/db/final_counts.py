"""How many runs are in each final state, kept by the database as it changes.

Counting COMPLETED runs at every ``/metrics`` scrape would read a year of history each time. So
triggers on ``flow_runs`` append a delta row to ``flow_run_final_counts`` whenever a run enters a
final state (+1), leaves one (-1: a crashed run restarted) or is deleted in one (-1: retention,
a deleted flow): every writer is covered, whatever path it takes, in its own transaction. A scrape
sums the rows (few: ``compact`` folds them into one per state). Non-final states are not counted
here: they are few, and counted live over the (state_type, expected_start_time) index.

The triggers are created by the migration that added the table and, on a new database built from
the models, by ``install`` (``session.migrate`` runs it after ``create_all``).
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.orm import Session

from orchestrator.states import FINAL_STATES

TABLE = "flow_run_final_counts"
_FINAL = ", ".join(f"'{s.value}'" for s in sorted(FINAL_STATES))

POSTGRES_TRIGGERS = [  # also sent by ``session._create_in_one_round_trip``
    f"""CREATE FUNCTION flow_run_final_counts_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.state_type IN ({_FINAL}) THEN
    INSERT INTO {TABLE} (state_type, delta) VALUES (OLD.state_type, -1);
  END IF;
  IF NEW.state_type IN ({_FINAL}) THEN
    INSERT INTO {TABLE} (state_type, delta) VALUES (NEW.state_type, 1);
  END IF;
  RETURN NULL;
END $$""",
    # Deletes come in batches (retention): one statement-level insert per batch, not one per run.
    f"""CREATE FUNCTION flow_run_final_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {TABLE} (state_type, delta)
    SELECT state_type, -count(*) FROM gone WHERE state_type IN ({_FINAL}) GROUP BY state_type;
  RETURN NULL;
END $$""",
    # WHEN is checked without calling the function: creating a SCHEDULED run or a heartbeat costs nothing.
    f"""CREATE TRIGGER flow_runs_final_counts_insert AFTER INSERT ON flow_runs FOR EACH ROW
WHEN (NEW.state_type IN ({_FINAL})) EXECUTE FUNCTION flow_run_final_counts_row()""",
    f"""CREATE TRIGGER flow_runs_final_counts_update AFTER UPDATE OF state_type ON flow_runs FOR EACH ROW
WHEN (OLD.state_type IS DISTINCT FROM NEW.state_type AND (OLD.state_type IN ({_FINAL}) OR NEW.state_type IN ({_FINAL})))
EXECUTE FUNCTION flow_run_final_counts_row()""",
    """CREATE TRIGGER flow_runs_final_counts_delete AFTER DELETE ON flow_runs REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION flow_run_final_counts_deleted()""",
]

_SQLITE = [
    f"""CREATE TRIGGER flow_runs_final_counts_insert AFTER INSERT ON flow_runs WHEN NEW.state_type IN ({_FINAL})
BEGIN INSERT INTO {TABLE} (state_type, delta) VALUES (NEW.state_type, 1); END""",
    f"""CREATE TRIGGER flow_runs_final_counts_leave AFTER UPDATE OF state_type ON flow_runs
WHEN OLD.state_type IS NOT NEW.state_type AND OLD.state_type IN ({_FINAL})
BEGIN INSERT INTO {TABLE} (state_type, delta) VALUES (OLD.state_type, -1); END""",
    f"""CREATE TRIGGER flow_runs_final_counts_enter AFTER UPDATE OF state_type ON flow_runs
WHEN OLD.state_type IS NOT NEW.state_type AND NEW.state_type IN ({_FINAL})
BEGIN INSERT INTO {TABLE} (state_type, delta) VALUES (NEW.state_type, 1); END""",
    f"""CREATE TRIGGER flow_runs_final_counts_delete AFTER DELETE ON flow_runs WHEN OLD.state_type IN ({_FINAL})
BEGIN INSERT INTO {TABLE} (state_type, delta) VALUES (OLD.state_type, -1); END""",
]

_DROP_POSTGRES = [
    "DROP TRIGGER IF EXISTS flow_runs_final_counts_insert ON flow_runs",
    "DROP TRIGGER IF EXISTS flow_runs_final_counts_update ON flow_runs",
    "DROP TRIGGER IF EXISTS flow_runs_final_counts_delete ON flow_runs",
    "DROP FUNCTION IF EXISTS flow_run_final_counts_row()",
    "DROP FUNCTION IF EXISTS flow_run_final_counts_deleted()",
]
_DROP_SQLITE = [f"DROP TRIGGER IF EXISTS flow_runs_final_counts_{name}"
                for name in ("insert", "leave", "enter", "delete")]

COMPACT_ABOVE = 64  # delta rows; a scrape folds them when there are more


def install(connection: Connection) -> None:
    """Create the triggers (the table exists)."""
    from sqlalchemy import text

    for statement in POSTGRES_TRIGGERS if connection.dialect.name == "postgresql" else _SQLITE:
        connection.execute(text(statement))


def uninstall(connection: Connection) -> None:
    from sqlalchemy import text

    for statement in _DROP_POSTGRES if connection.dialect.name == "postgresql" else _DROP_SQLITE:
        connection.execute(text(statement))


def seed(connection: Connection) -> None:
    """One row per final state with the runs already there (the migration, once)."""
    from sqlalchemy import text

    connection.execute(text(f"INSERT INTO {TABLE} (state_type, delta) SELECT state_type, count(*) FROM flow_runs "
                            f"WHERE state_type IN ({_FINAL}) GROUP BY state_type"))


def read(session: Session) -> tuple[dict[str, int], int]:
    """The runs in each final state, and how many delta rows held them."""
    from sqlalchemy import func

    from orchestrator.server.db.models import flow_run_final_counts

    c = flow_run_final_counts.c
    counts, rows = {}, 0
    for state, total, n in session.execute(select(c.state_type, func.sum(c.delta), func.count()).group_by(c.state_type)):
        counts[state] = int(total or 0)
        rows += n
    return counts, rows


def compact(session: Session) -> None:
    """Fold the delta rows into one per state. The rows taken are exactly the rows deleted (one
    ``DELETE ... RETURNING``), so a delta committed meanwhile stays for the next fold; the caller
    commits."""
    from orchestrator.server.db.models import flow_run_final_counts as table

    sums: dict[str, int] = defaultdict(int)
    for state, delta in session.execute(delete(table).returning(table.c.state_type, table.c.delta)):
        sums[state] += delta
    if sums:
        session.execute(insert(table), [{"state_type": s, "delta": d} for s, d in sums.items()])
