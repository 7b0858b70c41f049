"""A deployment's entrypoint loaded in the flow-run process: ``path/to/file.py:function`` or
``package.module:function``. Also what ``orch`` uses to check a project's entrypoints."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class EntrypointError(Exception):
    pass


def load_entrypoint(entrypoint: str, path: str | None) -> Callable[..., Any]:
    """``path/to/file.py:function`` (relative to ``path``) or ``package.module:function``."""
    target, sep, attribute = entrypoint.rpartition(":")
    if not sep or not target or not attribute:
        raise EntrypointError(f"entrypoint '{entrypoint}' must look like 'path/file.py:function'")
    base = Path(path or ".")
    if target.endswith(".py"):
        file = (base / target).resolve()
        if not file.is_file():
            raise EntrypointError(f"entrypoint '{entrypoint}': file {file} not found")
        sys.path.insert(0, str(file.parent))
        spec = importlib.util.spec_from_file_location(f"__orch_flow__.{file.stem}", file)
        if spec is None or spec.loader is None:
            raise EntrypointError(f"entrypoint '{entrypoint}': cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise EntrypointError(f"entrypoint '{entrypoint}': importing {file.name} failed: "
                                  f"{type(error).__name__}: {error}") from error
    else:
        sys.path.insert(0, str(base.resolve()))
        try:
            module = importlib.import_module(target)
        except Exception as error:
            raise EntrypointError(f"entrypoint '{entrypoint}': cannot import module '{target}': "
                                  f"{type(error).__name__}: {error}") from error
    obj: Any = module
    for part in attribute.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise EntrypointError(f"entrypoint '{entrypoint}': '{attribute}' not found in {target}")
    if not callable(obj):
        raise EntrypointError(f"entrypoint '{entrypoint}': '{attribute}' is not a function")
    return obj  # type: ignore[no-any-return]
