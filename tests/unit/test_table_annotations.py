"""The tables' annotations are objects, not strings: with ``from __future__ import annotations``
SQLAlchemy's declarative mapping evaluates each ``Mapped[...]`` string with ``eval`` (the mixin's
again for every table), ~15 % of the tables' import on every server start (bench/RESULTS.md,
issue 22)."""

from __future__ import annotations

from orchestrator.server.db import base, models, trigger_tables


def test_no_table_annotation_is_a_string() -> None:
    classes = [value for module in (base, models, trigger_tables) for value in vars(module).values()
               if isinstance(value, type) and value.__module__ == module.__name__]
    annotations = {f"{cls.__name__}.{name}": annotation for cls in classes
                   for name, annotation in vars(cls).get("__annotations__", {}).items()}
    assert len(annotations) > 150  # every table's columns were looked at
    assert [name for name, annotation in annotations.items() if isinstance(annotation, str)] == []
