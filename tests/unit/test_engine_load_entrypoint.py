"""``orchestrator.runtime.entrypoint.load_entrypoint``: ``file.py:func`` and ``package.module:func``."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from orchestrator.runtime.entrypoint import EntrypointError, load_entrypoint
from orchestrator.sdk.flows import Flow

pytestmark = pytest.mark.usefixtures("isolated_imports")

FLOW_SOURCE = textwrap.dedent(
    '''
    from orchestrator.sdk.flows import flow

    MARKER = "{marker}"
    NOT_CALLABLE = 42
    NOTHING = None


    def plain(x=1):
        return ("plain", MARKER, x)


    @flow
    def decorated(x: int = 1) -> int:
        return x + 1


    class Holder:
        @staticmethod
        def method():
            return ("method", MARKER)
    '''
)


def write(base: Path, relative: str, marker: str = "m") -> Path:
    file = base / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(FLOW_SOURCE.format(marker=marker))
    return file


def unique() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


# --- file.py:func -------------------------------------------------------------------------------


def test_loads_a_function_from_a_file_relative_to_path(tmp_path: Path) -> None:
    marker = unique()
    write(tmp_path, "flows/my_flow.py", marker)

    fn = load_entrypoint("flows/my_flow.py:plain", str(tmp_path))

    assert fn(3) == ("plain", marker, 3)


def test_loads_a_flow_object_from_a_file(tmp_path: Path) -> None:
    name = f"{unique()}.py"
    write(tmp_path, name)

    target = load_entrypoint(f"{name}:decorated", str(tmp_path))

    assert isinstance(target, Flow)
    assert target(x=4) == 5


def test_loads_a_dotted_attribute(tmp_path: Path) -> None:
    marker = unique()
    write(tmp_path, "jobs.py", marker)

    assert load_entrypoint("jobs.py:Holder.method", str(tmp_path))() == ("method", marker)


def test_path_none_means_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = unique()
    write(tmp_path, "here.py", marker)
    monkeypatch.chdir(tmp_path)

    assert load_entrypoint("here.py:plain", None)() == ("plain", marker, 1)


def test_the_file_is_found_relative_to_path_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "project", "job.py", "in-project")
    write(tmp_path / "cwd", "job.py", "in-cwd")
    monkeypatch.chdir(tmp_path / "cwd")

    assert load_entrypoint("job.py:plain", str(tmp_path / "project"))()[1] == "in-project"


def test_the_files_directory_is_importable_from_the_flow(tmp_path: Path) -> None:
    helper = unique()
    (tmp_path / f"{helper}.py").write_text("VALUE = 'from helper'\n")
    (tmp_path / "main_flow.py").write_text(f"import {helper}\n\ndef run():\n    return {helper}.VALUE\n")

    assert load_entrypoint("main_flow.py:run", str(tmp_path))() == "from helper"


# --- package.module:func ------------------------------------------------------------------------


def test_loads_a_function_from_a_module_under_path(tmp_path: Path) -> None:
    package = unique()
    marker = unique()
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    write(tmp_path / package, "tasks.py", marker)

    fn = load_entrypoint(f"{package}.tasks:plain", str(tmp_path))

    assert fn(7) == ("plain", marker, 7)


def test_loads_an_installed_module() -> None:
    from orchestrator.states import is_allowed

    assert load_entrypoint("orchestrator.states:is_allowed", None) is is_allowed


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("entrypoint", ["no_colon_here.py", ":func", "file.py:", ""])
def test_bad_format_is_refused_naming_the_entrypoint(entrypoint: str, tmp_path: Path) -> None:
    with pytest.raises(EntrypointError) as caught:
        load_entrypoint(entrypoint, str(tmp_path))

    assert f"'{entrypoint}'" in str(caught.value)
    assert "path/file.py:function" in str(caught.value)


def test_missing_file_is_refused_naming_the_entrypoint(tmp_path: Path) -> None:
    with pytest.raises(EntrypointError) as caught:
        load_entrypoint("flows/absent.py:main", str(tmp_path))

    assert "'flows/absent.py:main'" in str(caught.value)
    assert "not found" in str(caught.value)


def test_missing_function_is_refused_naming_the_entrypoint(tmp_path: Path) -> None:
    write(tmp_path, "jobs.py")

    with pytest.raises(EntrypointError) as caught:
        load_entrypoint("jobs.py:does_not_exist", str(tmp_path))

    assert "'jobs.py:does_not_exist'" in str(caught.value)
    assert "'does_not_exist' not found" in str(caught.value)


def test_missing_dotted_attribute_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "jobs.py")

    with pytest.raises(EntrypointError, match="'jobs.py:Holder.absent'"):
        load_entrypoint("jobs.py:Holder.absent", str(tmp_path))


def test_non_callable_attribute_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "jobs.py")

    with pytest.raises(EntrypointError, match="not a function") as caught:
        load_entrypoint("jobs.py:NOT_CALLABLE", str(tmp_path))
    assert "'jobs.py:NOT_CALLABLE'" in str(caught.value)


def test_attribute_set_to_none_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "jobs.py")

    with pytest.raises(EntrypointError, match="'jobs.py:NOTHING'"):
        load_entrypoint("jobs.py:NOTHING", str(tmp_path))


def test_missing_module_is_refused_naming_the_entrypoint(tmp_path: Path) -> None:
    module = f"{unique()}.nowhere"

    with pytest.raises(EntrypointError) as caught:
        load_entrypoint(f"{module}:main", str(tmp_path))

    assert f"'{module}:main'" in str(caught.value)
    assert "ModuleNotFoundError" in str(caught.value)


def test_file_that_fails_to_import_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('cannot start')\n")

    with pytest.raises(EntrypointError) as caught:
        load_entrypoint("broken.py:main", str(tmp_path))

    message = str(caught.value)
    assert "'broken.py:main'" in message
    assert "RuntimeError" in message and "cannot start" in message
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_file_with_a_syntax_error_is_reported(tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("def broken(:\n")

    with pytest.raises(EntrypointError, match="SyntaxError"):
        load_entrypoint("syntax.py:broken", str(tmp_path))


def test_a_directory_named_like_a_file_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "dir.py").mkdir()

    with pytest.raises(EntrypointError, match="not found"):
        load_entrypoint("dir.py:main", str(tmp_path))
