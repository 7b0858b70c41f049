"""How every ``orch`` command shows its help and its usage errors, set once for the whole app
(``use_for``).

Typer (0.29) prints each parameter's Python type next to it -- ``<list[str]>``, ``<bool>`` even on
``--help`` -- which tells a user nothing. Here an option shows a metavar instead (``--state STATE``;
a module may give a better one, ``--timeout SECONDS``), a flag shows nothing, and an argument shows
only its name, in the usage line too (``NAME``, ``[NAME]`` when optional; typer 0.29 writes a required
one ``{NAME}``, which docs/cli.md and every other CLI do not). Help texts are written as plain
sentences (no reST): Rich prints them as they are, except that a paragraph's line breaks, the
docstring's own wrapping, are joined, so the terminal wraps it (not ``...the worker's`` cut mid-line).

A usage error (an unknown command or option, a missing argument, a value typer refuses) is one
line on stderr, ``Error: ... (see 'orch dev --help')``, with click's exit code 2, like every other
error of the CLI (``cli/output.py``'s ``fail``), instead of typer's usage line, hint and Rich box.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder


class _NamedArgument(TyperArgument):
    """An argument whose help shows its name and help, not its Python type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = (self.metavar or (self.name or "").upper()) + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


def _reflowed(text: str) -> str:
    """``text``'s paragraphs each on one line (typer keeps the docstring's line breaks)."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


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


# click's UsageError as typer raises it: typer 0.29 carries its own copy of click (``typer._click``),
# older ones use click itself; ``typer.BadParameter`` derives from the right one either way.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Tidied:
    """Tidies the parameters (and the --help option) of the command or group it is mixed into."""

    params: list[Any]
    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _tidy(param)
        if self.help:
            self.help = _reflowed(self.help)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            _tidy(option)
        return option

    # Parsing a command's own line happens in ``make_context``; resolving and parsing its
    # subcommands, and running them, in ``invoke``: between them every usage error passes here.
    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)  # type: ignore[misc]
        except UsageError as error:
            # Some of click's errors (an option missing its value) carry no context: name the command.
            path = " ".join(p for p in (parent.command_path if parent is not None else None, info_name) if p)
            _usage_error(error, path)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except UsageError as error:
            _usage_error(error)


def _usage_error(error: Any, path: str | None = None) -> Any:
    """One line for a usage error, then click's exit code (2)."""
    if type(error).__name__ == "NoArgsIsHelpError":  # a group typed alone: its help, as before
        raise error
    message = " ".join(error.format_message().split()).rstrip(".")
    if error.ctx is not None:
        path = error.ctx.command_path
    hint = f" (see '{path} --help')" if path else ""
    print(f"Error: {message}{hint}", file=sys.stderr)
    raise typer.Exit(error.exit_code)


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
