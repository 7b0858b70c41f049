"""How every ``orch`` command shows its help, set once for the whole app (``use_for``).

Typer (0.29) prints each parameter's Python type next to it -- ``<list[str]>``, ``<bool>`` even on
``--help`` -- which tells a user nothing. Here an option shows a metavar instead (``--state STATE``;
a module may give a better one, ``--timeout SECONDS``), a flag shows nothing, and an argument shows
only its name. Help texts are written as plain sentences (no reST): Rich prints them as they are.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder


class _NamedArgument(TyperArgument):
    """An argument whose help shows its name and help, not its Python type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _tidy(param: Any) -> None:
    if isinstance(param, TyperOption) and param.metavar is None:
        if param.is_flag:
            param.metavar = ""
        else:
            longest = max((*param.opts, *param.secondary_opts), key=len)
            param.metavar = longest.lstrip("-").upper()
    elif isinstance(param, TyperArgument) and type(param) is TyperArgument:
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
        # Typer builds its own argument objects (no class hook): this one only changes the display.
        param.__class__ = _NamedArgument


class _Tidied:
    """Tidies the parameters (and the --help option) of the command or group it is mixed into."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _tidy(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            _tidy(option)
        return option


class OrchCommand(_Tidied, TyperCommand):
    pass


class OrchGroup(_Tidied, TyperGroup):
    pass


def use_for(app: typer.Typer) -> None:
    """Make every command and group under ``app`` an ``OrchCommand`` / ``OrchGroup``, through the
    ``cls`` that ``@app.command(cls=...)`` and ``add_typer(cls=...)`` set (one place for all)."""
    # Typer fills in its own classes as defaults: replace those, keep any a module chose itself.
    if _default(app.info.cls, TyperGroup):
        app.info.cls = OrchGroup
    for command in app.registered_commands:
        if _default(command.cls, TyperCommand):
            command.cls = OrchCommand
    for group in app.registered_groups:
        if _default(group.cls, TyperGroup):
            group.cls = OrchGroup
        if group.typer_instance is not None:
            use_for(group.typer_instance)


def _default(cls: Any, typer_default: type) -> bool:
    return cls is None or cls is typer_default or isinstance(cls, DefaultPlaceholder)
