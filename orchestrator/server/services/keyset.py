"""Keyset pagination: the one way the API's and the UI's lists page.

A page is read after the key of the last row of the page before -- never by offset, so page 10,000
costs what page 1 does (an index range read from the key on), and rows written meanwhile neither
repeat nor shift a row out of view. The key is the list's order: its columns, the last of them
unique (an id), so ties in the first columns are broken and no row is lost or read twice. Each
list's order has an index that matches it (``db/models.py``), behind its equality filters.

The cursor a client sends back is the key, as opaque URL-safe text (base64 of a JSON list).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import DateTime, Integer, Select, String, Uuid, and_, func, or_, select, tuple_, union
from sqlalchemy.orm import InstrumentedAttribute, Session

from orchestrator.errors import InvalidInput

Row = TypeVar("Row")
MAX_CURSOR_CHARS = 400  # what a route accepts: the longest key (a name of 255 characters and an id) fits


@dataclass(frozen=True)
class Order:
    """A list's order: ``columns`` (the last one unique), all ascending or all descending.
    ``key`` reads a row's key when the columns are not all attributes of the row (a joined table's)."""

    columns: tuple[InstrumentedAttribute[Any], ...]
    descending: bool = False
    key: Callable[[Any], tuple[Any, ...]] | None = None

    def sql(self) -> list[Any]:
        return [c.desc() for c in self.columns] if self.descending else list(self.columns)

    def key_of(self, row: Any) -> tuple[Any, ...]:
        if self.key is not None:
            return self.key(row)
        return tuple(getattr(row, c.key) for c in self.columns)

    def after(self, key: Sequence[Any]) -> Any:
        """Rows after ``key`` in this order. The first column's bound is said on its own too: an
        index whose leading columns are an equality filter then serves it as a range condition
        (PostgreSQL uses a row comparison as an index condition only on an index of exactly these
        columns)."""
        columns = self.columns
        if len(columns) == 1:
            return columns[0] < key[0] if self.descending else columns[0] > key[0]
        row, last = tuple_(*columns), tuple_(*key)
        if self.descending:
            return and_(columns[0] <= key[0], row < last)
        return and_(columns[0] >= key[0], row > last)

    def before(self, key: Sequence[Any]) -> Any:
        """Rows before ``key`` (a page back), the mirror of ``after``."""
        return Order(self.columns, not self.descending).after(key)


def page(session: Session, statement: Select[tuple[Row]], order: Order, limit: int,
         cursor: str | None = None, *, either: Sequence[Any] = ()) -> tuple[list[Row], str | None]:
    """Up to ``limit`` rows of ``statement`` in ``order`` after ``cursor`` (None: the first page),
    and the cursor of the next page (None: this was the last). One row more is read instead of
    counting the rest. ``either``: see ``first``."""
    if cursor:
        statement = statement.where(order.after(decode(cursor, order)))
    rows = first(session, statement, order, limit + 1, either=either)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(order.key_of(rows[-1]))


def first(session: Session, statement: Select[tuple[Row]], order: Order, count: int, *,
          either: Sequence[Any] = ()) -> list[Row]:
    """The first ``count`` rows of ``statement`` in ``order`` that meet one of the conditions
    ``either`` (any row when there is none), e.g. one per state asked for.

    Several conditions are not said as one ``IN`` list or ``OR``: neither can walk an index in order,
    so PostgreSQL would read and sort every match (a year of COMPLETED runs) to return a page. The
    page is read as one ordered, limited walk per condition (each served by its equality index),
    merged by key."""
    if len(either) < 2:
        statement = statement.where(*either)
        return list(session.scalars(statement.order_by(*order.sql()).limit(count)))
    unique = order.columns[-1]
    keys = _keys_of_each(statement.order_by(*order.sql()), unique, either, count)
    return list(session.scalars(statement.join(keys, keys.c[0] == unique).order_by(*order.sql()).limit(count)))


def _keys_of_each(statement: Select[Any], unique: InstrumentedAttribute[Any], either: Sequence[Any],
                  count: int) -> Any:
    """The ``unique`` column of the first ``count`` rows of ``statement`` under each condition of
    ``either``, without repeats (a row may meet two): a subquery of one column."""
    walks = [statement.where(condition).limit(count).subquery() for condition in either]
    return union(*(select(walk.c[unique.key]) for walk in walks)).subquery()


def page_or_offset(session: Session, statement: Select[tuple[Row]], order: Order, limit: int, *,
                   cursor: str | None = None, offset: int = 0,
                   either: Sequence[Any] = ()) -> tuple[list[Row], str | None]:
    """``page``, or, for old clients, the page at ``offset`` (deprecated: it reads and skips every
    row before the page). An offset page has a cursor too, so its reader can go on by key."""
    if not offset:
        return page(session, statement, order, limit, cursor, either=either)
    if cursor:
        raise InvalidInput([{"loc": ["query", "offset"], "type": "value_error",
                             "msg": "give cursor or offset, not both (offset is deprecated)"}])
    if either:
        statement = statement.where(or_(*either))
    rows = list(session.scalars(statement.order_by(*order.sql()).offset(offset).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode(order.key_of(rows[limit - 1]))


def bounded_count(session: Session, statement: Select[Any], cap: int, *, either: Sequence[Any] = (),
                  unique: InstrumentedAttribute[Any] | None = None) -> tuple[int, bool]:
    """How many rows ``statement`` matches, counting at most ``cap`` (an index range of ``cap``
    entries, not the whole history): ``(count, capped)``, ``capped`` when there are more. ``either``:
    as for ``first``, at most ``cap`` entries of each condition's index (``unique`` names a row)."""
    if len(either) < 2:
        limited = statement.where(*either).order_by(None).limit(cap + 1).subquery()
    else:
        if unique is None:
            raise TypeError("bounded_count: several conditions need the unique column that names a row")
        limited = _keys_of_each(statement.order_by(None), unique, either, cap + 1)
    found = session.scalar(select(func.count()).select_from(limited)) or 0
    return min(found, cap), found > cap


def encode(key: Sequence[Any]) -> str:
    values = [v.isoformat() if isinstance(v, dt.datetime) else str(v) if isinstance(v, uuid.UUID) else v
              for v in key]
    data = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode(cursor: str, order: Order) -> tuple[Any, ...]:
    """The key in ``cursor``, each value as its column's type; a cursor of another list or a
    mangled one is a 422 naming ``cursor``."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(order.columns):
            raise ValueError(values)
        return tuple(_parse(value, column) for value, column in zip(values, order.columns, strict=True))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as error:
        raise InvalidInput([{"loc": ["query", "cursor"], "type": "value_error",
                             "msg": "not a cursor of this list (read it from the page before: `next`, "
                                    "or the Link header's rel=\"next\")"}]) from error


def _parse(value: Any, column: InstrumentedAttribute[Any]) -> Any:
    kind = column.type
    kind = getattr(kind, "impl", kind)  # a TypeDecorator (UTCDateTime): what it stores
    if isinstance(kind, DateTime):
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError(value)
        return parsed
    if isinstance(kind, Uuid):
        return uuid.UUID(value)
    if isinstance(kind, Integer):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(value)
        return value
    if isinstance(kind, String) and isinstance(value, str):
        return value
    raise ValueError(value)

