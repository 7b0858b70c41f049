"""Modules whose annotations are read at import keep them as objects, not strings: the tables
(SQLAlchemy's declarative mapping), the wire models and the settings (pydantic), the routes and
their dependencies (FastAPI reads every parameter's). With ``from __future__ import annotations``
each is a string the library evaluates again with ``eval`` (SQLAlchemy: the mixin's once more per
table), ~3 % of a server start's instructions (bench/RESULTS.md, issue 22)."""

from __future__ import annotations
import __future__

import importlib
import pkgutil
from types import ModuleType

import orchestrator.schemas
import orchestrator.server.api.routes
import orchestrator.server.ui
from orchestrator.server.db import base, models, trigger_tables

# FastAPI dependencies outside the routes' modules (``Depends(...)``).
DEPENDENCIES = ("orchestrator.server.api.context", "orchestrator.server.api.scopes",
                "orchestrator.server.api.auth", "orchestrator.server.api.audit")


def _modules() -> list[ModuleType]:
    found = [base, models, trigger_tables, importlib.import_module("orchestrator.settings")]
    found += [importlib.import_module(name) for name in DEPENDENCIES]
    for package in (orchestrator.schemas, orchestrator.server.api.routes, orchestrator.server.ui):
        found.append(package)
        found += [importlib.import_module(f"{package.__name__}.{info.name}")
                  for info in pkgutil.iter_modules(package.__path__)]
    return found


def test_modules_read_at_import_do_not_postpone_their_annotations() -> None:
    modules = _modules()
    assert len(modules) > 40  # every module of the packages was walked
    postponed = [module.__name__ for module in modules if vars(module).get("annotations") is __future__.annotations]
    assert postponed == []


def test_no_table_annotation_is_a_string() -> None:
    classes = [value for module in (base, models, trigger_tables) for value in vars(module).values()
               if isinstance(value, type) and value.__module__ == module.__name__]
    annotations = {f"{cls.__name__}.{name}": annotation for cls in classes
                   for name, annotation in vars(cls).get("__annotations__", {}).items()}
    assert len(annotations) > 150  # every table's columns were looked at
    assert [name for name, annotation in annotations.items() if isinstance(annotation, str)] == []
