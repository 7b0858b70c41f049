"""``orchestrator.sdk.flows``: the ``@flow`` decorator, in-process calls, retries and entrypoints."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.errors import DeploymentError
from orchestrator.sdk.flows import Flow, flow


def import_file(file: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def write_flow_module(directory: Path, filename: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / filename
    file.write_text(
        textwrap.dedent(
            '''
            from orchestrator.sdk.flows import flow


            @flow
            def etl_job(x: int = 1) -> int:
                """Extract, transform, load."""
                return x * 2


            @flow(name="custom")
            def other() -> str:
                return "other"
            '''
        )
    )
    return file


# --- decorator ----------------------------------------------------------------------------------


def test_bare_decorator_makes_a_flow_with_a_dashed_name() -> None:
    @flow
    def my_etl_flow() -> int:
        return 1

    assert isinstance(my_etl_flow, Flow)
    assert my_etl_flow.name == "my-etl-flow"
    assert my_etl_flow.retries == 0


def test_decorator_with_arguments() -> None:
    @flow(name="Nightly ETL", version="1.2", retries=3)
    def nightly() -> None: ...

    assert isinstance(nightly, Flow)
    assert nightly.name == "Nightly ETL"
    assert nightly.version == "1.2"
    assert nightly.retries == 3


def test_decorator_with_empty_parentheses_uses_defaults() -> None:
    @flow()
    def with_parens() -> str:
        return "ok"

    assert isinstance(with_parens, Flow)
    assert with_parens.name == "with-parens"
    assert with_parens() == "ok"


def test_description_comes_from_the_cleaned_docstring() -> None:
    @flow
    def documented() -> None:
        """First line.

        More detail.
        """

    assert documented.description == "First line.\n\nMore detail."


def test_explicit_description_wins_over_docstring() -> None:
    @flow(description="explicit")
    def documented() -> None:
        """Docstring."""

    assert documented.description == "explicit"


def test_no_docstring_means_no_description() -> None:
    @flow
    def undocumented() -> None: ...

    assert undocumented.description is None


def test_flow_keeps_the_wrapped_function_metadata() -> None:
    def original(a: int) -> int:
        """Doc."""
        return a

    wrapped = flow(original)

    assert wrapped.fn is original
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is original


def test_decorating_a_non_callable_is_refused() -> None:
    with pytest.raises(TypeError):
        Flow(42)  # type: ignore[arg-type]


# --- calling ------------------------------------------------------------------------------------


def test_calling_runs_in_process_with_args_and_kwargs() -> None:
    seen: list[tuple[Any, ...]] = []

    @flow
    def add(a: int, b: int = 10) -> int:
        seen.append((a, b))
        return a + b

    assert add(1, b=2) == 3
    assert add(5) == 15
    assert seen == [(1, 2), (5, 10)]


def test_retries_until_success() -> None:
    calls = []

    @flow(retries=2)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"failure {len(calls)}")
        return "done"

    assert flaky() == "done"
    assert len(calls) == 3


def test_too_few_retries_raise_the_last_error() -> None:
    calls = []

    @flow(retries=1)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"failure {len(calls)}")
        return "done"

    with pytest.raises(RuntimeError, match="failure 2"):
        flaky()
    assert len(calls) == 2


def test_no_retries_by_default() -> None:
    calls = []

    @flow
    def failing() -> None:
        calls.append(1)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        failing()
    assert len(calls) == 1


def test_retries_do_not_swallow_base_exceptions() -> None:
    calls = []

    @flow(retries=5)
    def interrupted() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert len(calls) == 1


# --- entrypoint ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("isolated_imports")
def test_entrypoint_is_the_file_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_flow_module(tmp_path / "flows" / "sub", "etl.py")
    module = import_file(file, f"unit_flow_{uuid.uuid4().hex}")
    monkeypatch.chdir(tmp_path)

    entrypoint, path = module.etl_job.entrypoint()

    assert entrypoint == "flows/sub/etl.py:etl_job"
    assert Path(path) == tmp_path.resolve()
    assert module.etl_job.name == "etl-job"
    assert module.etl_job.description == "Extract, transform, load."
    assert module.etl_job(x=4) == 8


@pytest.mark.usefixtures("isolated_imports")
def test_entrypoint_uses_the_function_name_not_the_flow_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write_flow_module(tmp_path, "jobs.py")
    module = import_file(file, f"unit_flow_{uuid.uuid4().hex}")
    monkeypatch.chdir(tmp_path)

    assert module.other.name == "custom"
    assert module.other.entrypoint()[0] == "jobs.py:other"


@pytest.mark.usefixtures("isolated_imports")
def test_entrypoint_outside_cwd_falls_back_to_the_module_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write_flow_module(tmp_path / "code", "jobs.py")
    module_name = f"unit_flow_{uuid.uuid4().hex}"
    module = import_file(file, module_name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert module.etl_job.entrypoint() == (f"{module_name}:etl_job", str(elsewhere.resolve()))


@pytest.mark.usefixtures("isolated_imports")
def test_entrypoint_outside_cwd_and_not_importable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write_flow_module(tmp_path / "code", "jobs.py")
    module_name = f"unit_flow_{uuid.uuid4().hex}"
    module = import_file(file, module_name)
    del sys.modules[module_name]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    with pytest.raises(DeploymentError, match="outside the working directory"):
        module.etl_job.entrypoint()


@pytest.mark.parametrize("filename", ["<stdin>", "<string>", "<ipython-input-1-abc>"])
def test_entrypoint_refuses_interactively_defined_functions(filename: str) -> None:
    namespace: dict[str, Any] = {}
    exec(compile("def typed_in():\n    return 1\n", filename, "exec"), namespace)  # noqa: S102
    interactive = flow(namespace["typed_in"])

    assert interactive() == 1  # it still runs in-process
    with pytest.raises(DeploymentError, match="interactive") as caught:
        interactive.entrypoint()
    assert "typed-in" in str(caught.value)


def test_entrypoint_refuses_functions_defined_inside_a_function() -> None:
    @flow
    def nested() -> None: ...

    with pytest.raises(DeploymentError, match="inside a function") as caught:
        nested.entrypoint()
    assert "nested" in str(caught.value)


def test_entrypoint_refuses_callables_without_source() -> None:
    with pytest.raises(DeploymentError, match="interactive"):
        Flow(len).entrypoint()


def test_source_hash_is_stable_and_depends_on_the_source() -> None:
    def one() -> int:
        return 1

    def two() -> int:
        return 2

    assert flow(one).source_hash() == flow(one).source_hash()
    assert flow(one).source_hash() != flow(two).source_hash()
    assert len(flow(one).source_hash()) == 12


def test_the_default_version_is_the_sources_sha256_as_hashlib_computes_it() -> None:
    # The fork server hashes without hashlib (no libcrypto mapped); the version users see is unchanged.
    import hashlib
    import inspect

    from orchestrator.sdk import running
    from orchestrator.sdk.tasks import task

    def one() -> int:
        return 1

    expected = hashlib.sha256(inspect.getsource(one).encode()).hexdigest()[:12]
    assert flow(one).source_hash() == expected
    assert running.source_hash(one) == expected
    assert task(one).run_version == expected
    for data in (b"", b"abc", "\u00e9t\u00e9".encode(), bytes(range(256)) * 300):
        assert running.sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_the_hash_function_is_looked_for_once_per_process() -> None:
    # A module that is not there (``_sha2`` before CPython 3.12) is searched for on the whole
    # sys.path at every import of it: each flow-run process paid that on its path to RUNNING.
    import sys

    from orchestrator.sdk import running

    running.sha256_hex(b"first")  # whatever was looked for, found or not, is settled now

    class Watch:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name in ("_sha2", "_sha256", "hashlib"):
                self.asked.append(name)

    watch = Watch()
    sys.meta_path.insert(0, watch)  # type: ignore[arg-type]
    try:
        for data in (b"a", b"b", b"c"):
            running.sha256_hex(data)
    finally:
        sys.meta_path.remove(watch)  # type: ignore[arg-type]
    assert watch.asked == []
