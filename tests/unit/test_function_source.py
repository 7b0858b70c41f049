"""``running.function_source``, the flow-run process's shorter way to its flow's source (its
default version's input): the text ``inspect.getsource`` gives, for every shape of function, so
that no flow's or task's version changes with it."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.sdk.running import function_source, source_hash

MODULE = '''\
# -*- coding: utf-8 -*-
import functools


def plain(x):
    return x  # a comment


def decorate(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


@decorate
@decorate
def wrapped(
    a,
    b=(1,
       2),
):
    """Doc: é."""
    def inner():
        return a

    return inner() + len(b)
    # trailing comment, not in the block


async def coroutine():
    await something()


lam = (lambda y:
       y + 1)


class Holder:
    @staticmethod
    def method(z):
        return z


def one_liner(): return 1
'''


def load(tmp_path: Path, text: str, newline: str = "\n") -> ModuleType:
    path = tmp_path / f"sample_{abs(hash((text, newline)))}.py"
    path.write_bytes(text.replace("\n", newline).encode())
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_the_source_is_inspects_for_every_kind_of_function(tmp_path: Path, newline: str) -> None:
    module = load(tmp_path, MODULE, newline)
    functions = [
        module.plain,
        module.wrapped,
        module.coroutine,
        module.lam,
        module.Holder.method,
        module.one_liner,
        module.decorate,
    ]
    for fn in functions:
        assert function_source(fn) == inspect.getsource(fn), fn
    assert "def inner" in function_source(module.wrapped)  # the wrapped function's, as getsource's


def test_a_file_changed_after_its_import_is_read_again_as_getsource_does(tmp_path: Path) -> None:
    module = load(tmp_path, MODULE)
    before = function_source(module.plain)
    path = Path(module.__file__)
    path.write_text(MODULE.replace("return x  # a comment", "return x + 0  # changed, and longer"))
    assert function_source(module.plain) == inspect.getsource(module.plain) != before


def test_a_function_without_a_file_falls_back_to_its_name() -> None:
    namespace: dict[str, object] = {}
    exec(compile("def made():\n    return 1\n", "<made>", "exec"), namespace)  # noqa: S102 - a function without a file
    made = namespace["made"]
    with pytest.raises(OSError):
        inspect.getsource(made)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        function_source(made)  # type: ignore[arg-type]
    assert len(source_hash(made)) == 12  # type: ignore[arg-type]
