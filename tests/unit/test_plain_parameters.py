"""A flow whose parameters are all plain (``int``, ``str``, ``float``, ``bool``, ``None``, ``Any`` or
unannotated, or one of the first four ``| None``, with plain defaults) has its parameters coerced by validators built once
(``parameters._coerce_plain``), not by a model built per run: the answers must be the model's, value
for value and error for error."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Optional, Union

import pytest

from orchestrator import parameters
from orchestrator.errors import InvalidInput
from orchestrator.parameters import call_arguments, coerce_parameters


def every_plain(a: int, b: str, c: float, d: bool, e: None, f: Any, g, h: int = 7) -> None:
    pass


def defaults(a: int = 1, b: float = 2.5, c: str = "x", d: bool = False, e: int = None) -> None:  # type: ignore[assignment]  # noqa: RUF013 - a plain default of another type
    pass


def keyword_only(a: int, /, b: int, *, c: str, d: float = 0.5) -> None:
    pass


def nullable(
    a: int | None,
    b: Optional[str] = "s",  # noqa: UP045 - the old spelling is plain too
    c: Union[None, float] = None,  # noqa: UP007
    d: bool | None = True,
) -> None:
    pass


class Holder:
    def method(self, x: int) -> None:
        pass


INPUTS: list[dict[str, Any]] = [
    {},
    {"a": "3", "b": "s", "c": "1.5", "d": "true", "e": None, "f": [1], "g": {"k": 1}},
    {"a": 3.0, "b": 4, "c": "nan", "d": 1, "e": 0, "f": None, "g": None, "h": "8"},
    {"a": "x", "b": None, "c": "y", "d": "maybe", "e": "z", "zz": 1, "yy": 2},
    {"a": 3.5, "b": True, "c": True, "d": 2, "e": None, "f": 1, "g": 1, "h": None},
    {"a": 1, "b": 2.5, "c": "x", "d": False, "e": None},
    {"a": 2**70, "b": "s"},
    {"x": "4"},
    {"x": "four", "self": 1},
]


def model_answer(fn: Any, given: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "values", parameters._coerce_by_model(fn, given)
    except InvalidInput as error:
        return "error", str(error)


def plain_answer(fn: Any, given: dict[str, Any]) -> tuple[str, Any]:
    signature = parameters.inspect.signature(fn)
    fields = parameters._plain_fields(fn, signature)
    assert fields is not None, "a plain signature must take the plain way"
    try:
        return "values", parameters._coerce_plain(fields, given)
    except InvalidInput as error:
        return "error", str(error)


@pytest.mark.parametrize("fn", [every_plain, defaults, keyword_only, nullable, Holder().method])
@pytest.mark.parametrize("given", INPUTS)
def test_plain_parameters_are_answered_as_the_model_answers(fn: Any, given: dict[str, Any]) -> None:
    plain, model = plain_answer(fn, given), model_answer(fn, given)
    assert plain == model
    assert type(plain[1]) is type(model[1])
    if plain[0] == "values":
        assert [type(v) for v in plain[1].values()] == [type(v) for v in model[1].values()]


def test_a_signature_that_is_not_plain_is_coerced_by_its_model() -> None:
    def either(a: int | str = 1) -> None: ...
    def three(a: int | str | None = None) -> None: ...
    def listed(a: list[int]) -> None: ...
    def mutable_default(a: Any = []) -> None: ...  # noqa: B006
    def variadic(a: int, **rest: int) -> None: ...

    for fn in (either, three, listed, mutable_default, variadic):
        assert parameters._plain_fields(fn, parameters.inspect.signature(fn)) is None
    assert coerce_parameters(variadic, {"a": "1", "b": "2"}) == {"a": 1, "rest": {"b": 2}}
    assert coerce_parameters(listed, {"a": ["1"]}) == {"a": [1]}


def test_a_plain_flow_s_parameters_reach_its_call() -> None:
    values = coerce_parameters(keyword_only, {"a": "1", "b": "2", "c": "s"})
    assert values == {"a": 1, "b": 2, "c": "s", "d": 0.5}
    assert call_arguments(keyword_only, values) == ([1], {"b": 2, "c": "s", "d": 0.5})
    with pytest.raises(InvalidInput, match="parameter 'b': Field required; parameter 'q': Extra inputs"):
        coerce_parameters(keyword_only, {"a": 1, "c": "s", "q": 1})


def test_a_function_without_parameters_takes_none_unless_its_signature_says_otherwise() -> None:
    def bare() -> None: ...
    def inner(x: int) -> None: ...

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> None: ...

    def said() -> None: ...

    said.__signature__ = inspect.Signature([inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY)])  # type: ignore[attr-defined]
    assert coerce_parameters(bare, {}) == {}
    assert call_arguments(bare, {}) == ([], {})
    with pytest.raises(InvalidInput, match="parameter 'a': Extra inputs are not permitted"):
        coerce_parameters(bare, {"a": 1})
    for fn in (wrapper, said):  # the signature inspect reads: through __wrapped__, or __signature__
        with pytest.raises(InvalidInput, match="parameter 'x': Field required"):
            coerce_parameters(fn, {})
