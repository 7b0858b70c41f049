"""The create-run route's statement stays short enough for psycopg to keep its parsing: psycopg
converts a query's ``%(name)s`` placeholders with a regular expression and caches the result only
for queries of at most 4,096 bytes (``MAX_CACHED_STATEMENT_LENGTH`` in psycopg's ``_queries``;
https://github.com/psycopg/psycopg/discussions/628). Past it, every create parsed its ~4 KB
statement again: +184k instructions on the route's thread, +15 % (bench/RESULTS.md, issue 22,
"Create-run API, round 7")."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from orchestrator.server.services import new_runs

PSYCOPG_CACHED_LENGTH = 4096


@pytest.mark.parametrize("counted", [True, False])
@pytest.mark.parametrize("guarded", [True, False])
def test_the_create_statement_is_within_the_length_psycopg_caches(guarded: bool, counted: bool) -> None:
    engine = create_engine("postgresql+psycopg://u@127.0.0.1:1/nowhere")  # no connection made
    sql = new_runs._postgres_sql(engine.dialect, guarded, counted=counted)
    # A margin for a column or two more: the guarded statement was 4,049 bytes before it was cut.
    assert len(sql.encode()) <= PSYCOPG_CACHED_LENGTH - 400, len(sql.encode())
