"""A flow's parameters: the JSON schema generated from its signature, and coercion of incoming
values (``"42"`` -> ``42`` for an ``int``) in the flow-run process. Both come from one pydantic
model built from the signature, so what the server enforces is what the flow receives."""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.docstrings import docstring_descriptions
from orchestrator.errors import InvalidInput

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


@dataclass(frozen=True)
class _Parameters:
    """A signature as one pydantic model (field ``p<i>`` aliased to the i-th parameter's name, so
    names such as ``json`` or ``copy`` cannot clash with ``BaseModel``), and how to call ``fn``."""

    model: Any
    signature: inspect.Signature
    var_keyword: str | None  # the name of ``**kwargs``: extra parameters are accepted into it
    keyword_value: Any  # what each extra parameter must be (the annotation of ``**kwargs``)


def _parameters(fn: Callable[..., Any]) -> _Parameters:
    from pydantic import ConfigDict, create_model

    signature = inspect.signature(fn)
    descriptions = docstring_descriptions(fn)
    hints = _hints(fn, signature)
    fields: dict[str, Any] = {}
    var_keyword, keyword_value = None, Any
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if index == 0 and name in ("self", "cls"):
            continue  # a method's implicit first argument is no parameter (as in Prefect)
        annotation, field = _field(name, parameter, hints.get(name, Any), descriptions.get(name))
        if not _has_schema(annotation, field):
            # A class pydantic cannot describe (or validate from JSON): this parameter alone takes
            # any value, as Prefect's open schema does; the flow receives the JSON value as sent.
            annotation = _variadic(parameter.kind, Any)
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword, keyword_value = name, typing.get_args(annotation)[1]
        fields[f"p{index}"] = (annotation, field)
    config = ConfigDict(extra="allow" if var_keyword else "forbid", arbitrary_types_allowed=True,
                        populate_by_name=False)
    model = create_model("Parameters", __config__=config, **fields)
    return _Parameters(model, signature, var_keyword, keyword_value)


def _hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    """Each parameter's resolved annotation. One that does not resolve (a name imported only
    under ``TYPE_CHECKING``, a class local to another function) leaves that parameter alone
    untyped, not all of them."""
    with contextlib.suppress(Exception):  # any error of evaluating user annotations
        return typing.get_type_hints(fn, include_extras=True)
    unwrapped = inspect.unwrap(fn)
    hints: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.annotation is inspect.Parameter.empty:
            continue
        holder = types.SimpleNamespace(__annotations__={name: parameter.annotation},
                                       __globals__=getattr(unwrapped, "__globals__", {}))
        try:
            hints[name] = typing.get_type_hints(holder, include_extras=True)[name]
        except Exception:  # noqa: BLE001, S112 - unresolvable: untyped
            continue
    return hints


def _field(name: str, parameter: inspect.Parameter, annotation: Any, doc: str | None) -> tuple[Any, Any]:
    """The annotation and pydantic ``Field`` of one parameter: a ``Field(...)`` default keeps its
    default, description and constraints; a description from ``Field`` or ``Annotated`` wins
    over the docstring's."""
    from pydantic import Field
    from pydantic.fields import FieldInfo

    default = parameter.default
    given = default if isinstance(default, FieldInfo) else None
    attributes: dict[str, Any] = dict(given._attributes_set) if given is not None else {}
    if given is not None and given.metadata:  # ge=, max_length=...: constraints, kept as Annotated metadata
        annotation = typing.Annotated[(annotation, *given.metadata)]
    if parameter.kind in _VARIADIC:
        attributes["default"] = [] if parameter.kind is inspect.Parameter.VAR_POSITIONAL else {}
    elif given is None:
        attributes["default"] = ... if default is inspect.Parameter.empty else default
    for key in ("alias", "validation_alias", "serialization_alias", "alias_priority"):
        attributes.pop(key, None)
    if doc and not attributes.get("description") and not _annotated_description(annotation):
        attributes["description"] = doc
    attributes.setdefault("title", name.replace("_", " ").title())
    return _variadic(parameter.kind, annotation), Field(alias=name, **attributes)


def _variadic(kind: Any, annotation: Any) -> Any:
    """``*args: T`` is a list of T, ``**kwargs: T`` a mapping of names to T."""
    if kind is inspect.Parameter.VAR_POSITIONAL:
        return list[annotation]  # type: ignore[valid-type]
    if kind is inspect.Parameter.VAR_KEYWORD:
        return dict[str, annotation]  # type: ignore[valid-type]
    return annotation


def _annotated_description(annotation: Any) -> bool:
    from pydantic.fields import FieldInfo

    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(isinstance(item, FieldInfo) and item.description for item in typing.get_args(annotation)[1:])


_PLAIN = frozenset({int, str, float, bool, type(None), Any})


def _has_schema(annotation: Any, field: Any) -> bool:
    from pydantic import ConfigDict, create_model

    if any(annotation is plain for plain in _PLAIN):  # the common case, quick: a flow run's start waits for it
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = ConfigDict(arbitrary_types_allowed=True)
            probe = create_model("Probe", __config__=config, p=(annotation, field))
            probe.model_json_schema(by_alias=True)
    except Exception:  # noqa: BLE001 - pydantic's schema-generation and user-class errors alike
        return False
    return True


def parameter_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The OpenAPI/JSON schema of ``fn``'s parameters (defaults, annotations, ``Field``s, Optional,
    enums, models); ``*args`` / ``**kwargs`` appear under their names as a list / an object, and
    a ``**kwargs`` flow accepts other parameters too (of its value type)."""
    from pydantic import TypeAdapter

    parameters = _parameters(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # defaults that are not JSON are left out of the schema
        schema: dict[str, Any] = parameters.model.model_json_schema(by_alias=True)
        if parameters.var_keyword is not None:
            value = parameters.keyword_value
            schema["additionalProperties"] = (TypeAdapter(value).json_schema() if value is not Any else {}) or True
    schema["title"] = "Parameters"
    return schema


def coerce_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert ``parameters`` for a call of ``fn``: one value per parameter name
    (``*args`` a list, ``**kwargs`` a dict that also takes the parameters the signature does not
    name). Raise ``InvalidInput`` naming each parameter that fails."""
    if not parameters and _names_none(fn):
        return {}  # what the empty model would give, without building it (~1.4 ms in a forked run)
    signature = inspect.signature(fn)
    if not parameters and not _takes_parameters(signature):
        return {}
    plain = _plain_fields(fn, signature)
    return _coerce_by_model(fn, parameters) if plain is None else _coerce_plain(plain, parameters)


def _coerce_by_model(fn: Callable[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """``coerce_parameters`` through the model of ``fn``'s signature (``_parameters``): any signature."""
    from pydantic import TypeAdapter, ValidationError

    described = _parameters(fn)
    problems: list[str] = []
    values: dict[str, Any] = {}
    try:
        instance = described.model.model_validate(parameters)
    except ValidationError as error:
        problems += _problems(error)
    else:
        aliases = {name: field.alias for name, field in described.model.model_fields.items()}
        values = {aliases[name]: getattr(instance, name) for name in described.model.model_fields}
    if described.var_keyword is not None:
        named = {field.alias for field in described.model.model_fields.values()}
        extra = {key: value for key, value in parameters.items() if key not in named}
        adapter = TypeAdapter(dict[str, described.keyword_value])  # type: ignore[name-defined]
        try:
            extra = adapter.validate_python(extra)
        except ValidationError as error:
            problems += _problems(error)
        values[described.var_keyword] = {**values.get(described.var_keyword, {}), **extra}
    if problems:
        raise InvalidInput("; ".join(problems))
    return values


def _names_none(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a function whose signature is empty, read from its code as
    ``inspect.signature`` reads it (one that says otherwise, by ``__signature__`` or
    ``__wrapped__``, is not read here): a no-parameter flow's way to RUNNING builds no
    ``Signature`` (~0.2 ms and ~40 page faults in a forked flow-run process, bench/RESULTS.md,
    issue 22, "The flow-run process ... round 6")."""
    if type(fn) is not types.FunctionType or hasattr(fn, "__signature__") or hasattr(fn, "__wrapped__"):
        return False
    code = fn.__code__
    return not (
        code.co_argcount
        or code.co_kwonlyargcount
        or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    )


def _takes_parameters(signature: inspect.Signature) -> bool:
    """Whether ``signature`` names a parameter (a method's implicit first one aside)."""
    names = list(signature.parameters)
    return len(names) > (1 if names[:1] in (["self"], ["cls"]) else 0)


_PLAIN_DEFAULTS = (int, float, str, bool, type(None))  # immutable: a default given as is, copied or not


def _plain_fields(fn: Callable[..., Any], signature: inspect.Signature) -> list[tuple[str, Any, Any]] | None:
    """For a signature whose parameters are all named, each annotated ``int``, ``str``, ``float``,
    ``bool`` (or one of them ``| None``), ``None``, ``Any`` or not at all, with no default or a
    default of the first five: each parameter's name, the pydantic-core validator of its type (the
    core schema pydantic generates for it in ``_parameters``'s model) and its default. None for any
    other signature."""
    hints: dict[str, Any] | None = None
    validators = _plain_validators()
    fields: list[tuple[str, Any, Any]] = []
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if index == 0 and name in ("self", "cls"):
            continue  # as ``_parameters``: no parameter
        if parameter.kind in _VARIADIC:
            return None
        default = parameter.default
        if default is not inspect.Parameter.empty and type(default) not in _PLAIN_DEFAULTS:
            return None  # a ``Field(...)``, a mutable or another default: the model's way
        annotation: Any = Any
        if parameter.annotation is not inspect.Parameter.empty:
            if hints is None:
                hints = _hints(fn, signature)
            annotation = hints.get(name, Any)
        validator = validators.get(_plain_key(annotation))
        if validator is None:
            return None
        fields.append((name, validator, default))
    return fields


def _plain_key(annotation: Any) -> tuple[str, bool] | None:
    """``(type name, nullable)`` for a plain annotation: ``int``... ``Any``, or one of the first four
    or'ed with ``None`` (``int | None``, ``Optional[int]``, ``Union[None, int]``); None otherwise."""
    try:
        plain = _PLAIN_NAMES.get(annotation)
    except TypeError:  # an unhashable annotation (a user's object): not plain
        return None
    if plain is not None:
        return plain, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if len(members) == 2 and type(None) in members:
            inner = _PLAIN_NAMES.get(members[0] if members[1] is type(None) else members[1])
            if inner in ("int", "str", "float", "bool"):
                return inner, True
    return None


_PLAIN_NAMES = {int: "int", str: "str", float: "float", bool: "bool", type(None): "none", Any: "any"}


@functools.cache
def _plain_validators() -> dict[tuple[str, bool], Any]:
    """A pydantic-core validator per plain annotation (``_plain_key``), with the core schema pydantic
    generates for it (``T | None``: T's, nullable). Built once per process: the fork server's
    rehearsal builds them for every flow-run process it forks."""
    from pydantic_core import SchemaValidator, core_schema

    made = {
        "int": core_schema.int_schema,
        "str": core_schema.str_schema,
        "float": core_schema.float_schema,
        "bool": core_schema.bool_schema,
        "none": core_schema.none_schema,
        "any": core_schema.any_schema,
    }
    validators = {(name, False): SchemaValidator(make()) for name, make in made.items()}
    for name in ("int", "str", "float", "bool"):
        validators[name, True] = SchemaValidator(core_schema.nullable_schema(made[name]()))
    return validators


def _coerce_plain(fields: list[tuple[str, Any, Any]], parameters: dict[str, Any]) -> dict[str, Any]:
    """What ``_coerce_by_model`` answers for a signature of ``_plain_fields``, field by field with
    validators built once, not a model per run: the model validates each field in order (a value
    given, else its default, else "missing"), then refuses each other name ("extra_forbidden"), and
    so does this, with pydantic-core's own messages.

    Why: building the model (``create_model``: pydantic's class machinery and schema generation) is
    ~3 ms of CPU and ~370 page faults in a flow-run process forked from the fork server, on its way
    to RUNNING (bench/RESULTS.md, issue 22, "The flow-run process ... round 6");
    tests/unit/test_plain_parameters.py holds the two ways to the same answers."""
    from pydantic_core import PydanticKnownError, ValidationError

    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, validator, default in fields:
        if name in parameters:
            try:
                values[name] = validator.validate_python(parameters[name])
            except ValidationError as error:
                problems += [f"parameter '{name}': {item['msg']}" for item in error.errors()]
        elif default is not inspect.Parameter.empty:
            values[name] = default
        else:
            problems.append(f"parameter '{name}': {PydanticKnownError('missing').message()}")
    named = {name for name, _, _ in fields}
    extra = PydanticKnownError("extra_forbidden").message()
    problems += [f"parameter '{key}': {extra}" for key in parameters if key not in named]
    if problems:
        raise InvalidInput("; ".join(problems))
    return values


def call_arguments(fn: Callable[..., Any], values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """``coerce_parameters``'s values (or a run's parameters as sent, when the flow does not
    validate them) as ``fn(*args, **kwargs)``: positional-only parameters and ``*args`` by
    position, ``**kwargs`` spread, the rest by name; names the signature lacks go to ``**kwargs``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if not values:
        return args, kwargs  # nothing to place: the signature is not needed
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs.update({name: value for name, value in values.items() if name not in parameters})
    # Before a *args, every parameter must be given by position, or *args would collide with it.
    by_position = {inspect.Parameter.POSITIONAL_ONLY}
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters.values()):
        by_position.add(inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for name, parameter in parameters.items():
        if name not in values:
            continue
        if parameter.kind in by_position:
            args.append(values[name])
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            value = values[name]
            args.extend(value if isinstance(value, list | tuple) else [value])
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            value = values[name]
            if isinstance(value, dict):
                kwargs.update(value)
            else:  # not validated, and not the dict it should be: passed under its own name
                kwargs[name] = value
        else:
            kwargs[name] = values[name]
    return args, kwargs


def _problems(error: Any) -> list[str]:
    return [f"parameter '{'.'.join(str(p) for p in item['loc']) or '?'}': {item['msg']}"
            for item in error.errors()]


def rehearse() -> None:
    """For the fork server to call once before it forks (``runtime/forkserver.py``'s ``_rehearse``):
    coerce a plain signature's parameters (the validators ``_plain_validators`` builds, shared then
    by every flow-run process) and a typed one's (the model's way: pydantic's model and schema
    machinery used once, so a forked run of such a flow copies fewer pages of it)."""

    def plain(x: int = 1) -> int:
        return x

    def typed(x: list[int] | None = None) -> list[int] | None:
        return x

    call_arguments(plain, coerce_parameters(plain, {"x": "2"}))
    call_arguments(typed, coerce_parameters(typed, {"x": ["2"]}))
