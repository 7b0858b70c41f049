"""No wire model field nor route parameter has a builtin (``list``, ``dict``) as its default
factory: pydantic reads each factory's signature, and a builtin's is parsed from its text each
time, leaving a cycle that holds a copy of ``sys.modules``, which a server's start freezes for good
(``schemas/base.py``'s ``new_list`` / ``new_dict`` instead)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import orchestrator.schemas
from orchestrator.schemas.base import new_dict, new_list
from orchestrator.server.api.app import create_app
from orchestrator.settings import Settings
from pools.broker import MemoryBroker

BUILTINS = (list, dict, set, tuple)


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for info in pkgutil.iter_modules(orchestrator.schemas.__path__):
        module = importlib.import_module(f"orchestrator.schemas.{info.name}")
        found += [value for value in vars(module).values()
                  if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__]
    return found


def test_no_wire_model_field_has_a_builtin_default_factory() -> None:
    models = _models()
    assert len(models) > 50  # every module of the package was walked
    builtin = [f"{model.__name__}.{name}" for model in models for name, field in model.model_fields.items()
               if field.default_factory in BUILTINS]
    assert builtin == []


def test_no_route_parameter_has_a_builtin_default_factory(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'o.db'}"), broker=MemoryBroker(),
                     run_services=False)
    factories: list[tuple[str, Any]] = []
    contexts = [each for route in app.routes  # every family loaded, each route as it is served
                for each in (route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route])]
    dependants = [(route.path, route.dependant) for route in contexts if getattr(route, "dependant", None)]
    while dependants:  # each route's and each of their dependencies' (the events' filter is one)
        path, dependant = dependants.pop()
        dependants += [(path, each) for each in dependant.dependencies]
        for param in dependant.query_params + dependant.header_params + dependant.body_params:
            if param.field_info.default_factory is not None:
                factories.append((f"{path} {param.name}", param.field_info.default_factory))
    assert {factory for _, factory in factories} <= {new_list, new_dict}
    assert len(factories) >= 5  # the list filters of runs, events and a worker's cancellations


def test_the_factories_make_a_new_value_each_time() -> None:
    assert new_list() == [] and new_list() is not new_list()
    assert new_dict() == {} and new_dict() is not new_dict()
