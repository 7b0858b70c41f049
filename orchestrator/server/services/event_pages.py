"""Reading events: pages of the ``events`` table by key (the API's and the UI's lists), and the
SQL conditions of an ``EventFilter`` (shared with the live stream, ``event_stream.py``). Writing
them is ``events.py``'s."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from sqlalchemy import and_, exists, false, not_, or_, select, tuple_
from sqlalchemy.orm import Session

from orchestrator.errors import InvalidInput
from orchestrator.labels import sql_any, sql_glob
from orchestrator.schemas.event_queries import Event, EventFilter, EventPage, ResourceFilter
from orchestrator.schemas.events import RESOURCE_ID, RESOURCE_ROLE
from orchestrator.server.db import models as m

# A filter with a part SQL does not check (labels of related resources, see EventFilter.python_only)
# reads at most this many rows for one page, checking each in Python; the page may then come back
# short, with a next_page token that reads on from the last row looked at. Why not SQL: the related
# resources are a JSON list, and "one element with all these labels" has no portable (SQLite and
# PostgreSQL) form; the id and role parts of such a filter are still narrowed by the indexed
# event_resources table, so the scan is over the right events already.
SCAN_BUDGET = 5000


def read_page(session: Session, where: EventFilter, limit: int, page: str | None = None) -> EventPage:
    """One page of events matching ``where``, ordered by (occurred, seq) ``where.order``, read on
    from ``page`` (a ``next_page`` token) by key -- never by offset, so a page costs the same deep
    in the history, and events written meanwhile neither repeat nor shift an event out of view."""
    dialect = session.get_bind().dialect.name
    descending = where.order == "DESC"
    position = _position(page)
    chunk = max(200, 2 * limit) if where.python_only else limit + 1
    clauses = conditions(where, dialect)
    kept: list[Event] = []
    scanned, exhausted = 0, False
    while len(kept) < limit and scanned < SCAN_BUDGET:
        statement = select(m.Event).where(*clauses)
        if position is not None:
            key, last = tuple_(m.Event.occurred, m.Event.seq), tuple_(*position)
            statement = statement.where(key < last if descending else key > last)
        order = (m.Event.occurred.desc(), m.Event.seq.desc()) if descending else (m.Event.occurred, m.Event.seq)
        rows = session.scalars(statement.order_by(*order).limit(chunk)).all()
        taken = 0
        for row in rows:
            if len(kept) == limit:
                break
            taken += 1
            scanned += 1
            position = (row.occurred, row.seq)
            event = Event.model_validate(row)
            if where.matches(event):
                kept.append(event)
        if len(rows) < chunk and taken == len(rows):
            exhausted = True
            break
    return EventPage(events=kept, next_page=None if exhausted or position is None else _token(position))


def _token(position: tuple[dt.datetime, int]) -> str:
    data = json.dumps({"occurred": position[0].isoformat(), "seq": position[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _position(page: str | None) -> tuple[dt.datetime, int] | None:
    if page is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)))
        occurred = dt.datetime.fromisoformat(data["occurred"])
        seq = data["seq"]
        if occurred.tzinfo is None or not isinstance(seq, int):
            raise ValueError(seq)
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
        raise InvalidInput("page: not a next_page token of this API (read it from the page before)") from error
    return occurred, seq


def conditions(where: EventFilter, dialect: str) -> list[Any]:
    """The SQL side of ``where``: exact for everything but related resources' labels (checked in
    Python, ``EventFilter.matches``). Each part uses an index when it is the narrowest one:
    (resource_id, occurred), (event, occurred), (occurred, seq), event_resources (resource_id, occurred)."""
    out: list[Any] = []
    if where.occurred.since is not None:
        out.append(m.Event.occurred >= where.occurred.since)
    if where.occurred.until is not None:
        out.append(m.Event.occurred <= where.occurred.until)
    name = where.event
    if name.name or name.prefix:
        out.append(or_(sql_any(m.Event.event, name.name, dialect) if name.name else false(),
                       *(_starts(m.Event.event, p, dialect) for p in name.prefix)))
    out.extend(not_(sql_glob(m.Event.event, p, dialect)) for p in name.exclude_name)
    # A "*" in an excluded prefix is literal; SQL would read it as a wildcard and exclude too much.
    out.extend(not_(_starts(m.Event.event, p, dialect)) for p in name.exclude_prefix if "*" not in p)
    out.extend(_primary(where.resource, dialect))
    if where.related is not None:
        related = where.related
        tests = _linked(related, dialect)
        if related.role:
            tests.append(sql_any(m.EventResource.role, related.role, dialect))
        if RESOURCE_ROLE in related.labels:
            tests.append(sql_any(m.EventResource.role, related.labels[RESOURCE_ROLE], dialect))
        out.append(exists().where(m.EventResource.event_seq == m.Event.seq, *tests))
    if where.any_resource is not None and (where.any_resource.id or where.any_resource.id_prefix):
        spec = where.any_resource
        out.append(or_(and_(*_ids(m.Event.resource_id, spec, dialect)),
                       exists().where(m.EventResource.event_seq == m.Event.seq,
                                      *_ids(m.EventResource.resource_id, spec, dialect))))
    return out


def _starts(column: Any, prefix: str, dialect: str) -> Any:
    return sql_glob(column, prefix + "*", dialect)


def _ids(column: Any, spec: ResourceFilter, dialect: str) -> list[Any]:
    if not (spec.id or spec.id_prefix):
        return []
    return [or_(sql_any(column, spec.id, dialect) if spec.id else false(),
                *(_starts(column, p, dialect) for p in spec.id_prefix))]


def _primary(spec: ResourceFilter, dialect: str) -> list[Any]:
    """The primary resource: ids on the indexed column, other labels on the JSON column (read as
    text: ``resource ->> 'key'`` on PostgreSQL, ``json_extract`` on SQLite; a missing label is
    NULL, which matches no pattern, negated or not -- the rule of ``orchestrator.labels``)."""
    out = _ids(m.Event.resource_id, spec, dialect)
    for key, patterns in spec.labels.items():
        column = m.Event.resource_id if key == RESOURCE_ID else m.Event.resource[key].as_string()
        out.append(sql_any(column, patterns, dialect))
    return out


def _linked(spec: ResourceFilter, dialect: str) -> list[Any]:
    """A related resource's id (on the indexed event_resources)."""
    out = _ids(m.EventResource.resource_id, spec, dialect)
    if RESOURCE_ID in spec.labels:
        out.append(sql_any(m.EventResource.resource_id, spec.labels[RESOURCE_ID], dialect))
    return out
