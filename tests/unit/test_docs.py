"""The user documentation stays true to the code: every ``orch`` command and option is in
docs/cli.md and its index table (and nothing there is stale), every setting is in docs/settings.md with the code's
default, and every relative link of README.md and docs/*.md reaches an existing file (and heading)."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CLI_MD = DOCS / "cli.md"
SETTINGS_MD = DOCS / "settings.md"
COMMAND_HEADING = re.compile(r"^(#{2,4}) `(orch(?: [a-z][a-z-]*)*)`\s*$")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
EXAMPLE_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


# --- the CLI ------------------------------------------------------------------------------------


def _commands() -> Iterator[tuple[str, Any]]:
    """``("orch work-pool create", command)`` for every leaf command of the Typer app. Duck-typed
    (``commands``, ``param_type_name``) so it works with click and with Typer's vendored click."""
    import typer.main

    from orchestrator.cli.commands import app

    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield path, command
            return
        for name, sub in subcommands.items():
            yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(app), "orch")


def _cli_sections() -> dict[str, str]:
    """Each ``### `orch ...` `` heading of docs/cli.md and its text up to the next heading."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in CLI_MD.read_text().splitlines():
        match = COMMAND_HEADING.match(line)
        if match:
            current = match.group(2)
            assert current not in sections, f"docs/cli.md describes '{current}' twice"
            sections[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_the_cli_walk_finds_commands_at_every_depth() -> None:
    paths = {path for path, _ in _commands()}
    assert {"orch dev", "orch work-pool create", "orch deployment run"} <= paths
    assert any(len(path.split()) == 4 for path in paths)  # e.g. orch deployment schedule ls


def test_every_cli_command_is_documented() -> None:
    documented = _cli_sections()
    missing = sorted(path for path, _ in _commands() if path not in documented)
    assert not missing, (
        f"commands without a '### `orch ...`' section in docs/cli.md: {', '.join(missing)}; "
        "add one with its arguments, options and a one-line example"
    )


def test_docs_describe_no_command_that_does_not_exist() -> None:
    stale = sorted(set(_cli_sections()) - {path for path, _ in _commands()})
    assert not stale, f"docs/cli.md describes commands the CLI does not have: {', '.join(stale)}"


def test_every_cli_option_is_documented_under_its_command() -> None:
    sections = _cli_sections()
    missing = []
    for path, command in _commands():
        text = sections.get(path, "")
        for param in command.params:
            if param.param_type_name != "option":
                continue
            flags = [*param.opts, *param.secondary_opts]
            names = [o for o in flags if o.startswith("--")] or flags
            # in backticks, and not as the prefix of a longer option (`--param` vs `--params`)
            missing += [f"{path} {name}" for name in names
                        if not re.search(rf"`{re.escape(name)}(?![\w-])", text)]
    assert not missing, (
        f"options not described in their command's section of docs/cli.md: {', '.join(missing)}")


def test_every_cli_command_has_an_example() -> None:
    sections = _cli_sections()
    def has_example(path: str) -> bool:
        blocks = EXAMPLE_BLOCK.findall(sections.get(path, ""))
        return any(re.search(rf"(?:^|\s){re.escape(path)}(?:\s|$)", line)
                   for block in blocks for line in block.splitlines())

    lacking = [path for path, _ in _commands() if not has_example(path)]
    assert not lacking, f"commands without a ```bash example in docs/cli.md: {', '.join(lacking)}"



def _index_commands() -> set[str]:
    """The commands the table at the top of docs/cli.md names: ``orch work-pool create``, ``ls``...
    (a bare name is a sibling of the full command before it)."""
    named: set[str] = set()
    for line in CLI_MD.read_text().split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("["):
            continue
        parent = ""
        for item in re.findall(r"`([^`]+)`", cells[1]):
            if item.startswith("orch "):
                parent = item.rsplit(" ", 1)[0]
                named.add(item)
            else:
                named.add(f"{parent} {item}")
    return named


def test_the_index_of_docs_cli_names_every_command() -> None:
    named, real = _index_commands(), {path for path, _ in _commands()}
    assert not real - named, f"commands missing from the table atop docs/cli.md: {', '.join(sorted(real - named))}"
    assert not named - real, f"the table atop docs/cli.md names no such command: {', '.join(sorted(named - real))}"

# --- settings -------------------------------------------------------------------------------------


def _settings_rows() -> dict[str, list[str]]:
    """The rows of the table under '## Settings' in docs/settings.md, by variable."""
    text = SETTINGS_MD.read_text()
    match = re.search(r"^## Settings\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/settings.md has no '## Settings' section"
    rows: dict[str, list[str]] = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`(ORCH_[A-Z0-9_]+)`", cells[0]) if line.startswith("|") else None
        if name:
            rows[name.group(1)] = cells
    return rows


def _env_names() -> dict[str, Any]:
    from orchestrator.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper(): info for field, info in Settings.model_fields.items()}


def _shown(default: object) -> str:
    """A default as a user writes it in the environment: ``true``, ``30`` (not ``True``, ``30.0``)."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, dt.timedelta):  # durations as seconds, which every duration setting accepts
        return _shown(default.total_seconds())
    return str(default)


def test_every_setting_is_documented() -> None:
    rows = _settings_rows()
    missing = sorted(set(_env_names()) - set(rows))
    assert not missing, f"settings missing from the table of docs/settings.md: {', '.join(missing)}"


def test_docs_list_no_setting_that_does_not_exist() -> None:
    stale = sorted(set(_settings_rows()) - set(_env_names()))
    assert not stale, f"docs/settings.md lists settings the code does not have: {', '.join(stale)}"


def test_documented_defaults_match_the_code() -> None:
    rows = _settings_rows()
    wrong = []
    for name, info in _env_names().items():
        cells = rows.get(name)
        if cells is None:
            continue  # reported by test_every_setting_is_documented
        assert len(cells) >= 4 and cells[-1], f"{name}: the row needs a default, who reads it and a meaning"
        if info.default is None:
            if not cells[1].startswith("unset"):
                wrong.append(f"{name}: the code's default is unset, the docs say {cells[1]}")
        elif f"`{_shown(info.default)}`" not in cells[1]:
            wrong.append(f"{name}: the code's default is {_shown(info.default)}, the docs say {cells[1]}")
    assert not wrong, "; ".join(wrong)



def test_seconds_that_may_be_zero_say_so() -> None:
    """docs/settings.md: every number of seconds is more than 0 unless its row says "0 or more"."""
    import annotated_types

    rows = _settings_rows()
    wrong = []
    for name, info in _env_names().items():
        if not name.endswith("_SECONDS") or name not in rows:
            continue
        may_be_zero = any(isinstance(rule, annotated_types.Ge) and rule.ge == 0 for rule in info.metadata)
        if may_be_zero != ("0 or more" in rows[name][-1]):
            wrong.append(f"{name} ({'0 or more' if may_be_zero else 'more than 0'} in the code)")
    assert not wrong, f"docs/settings.md says otherwise of: {', '.join(wrong)}"

# --- links ----------------------------------------------------------------------------------------


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_~]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(file: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", file.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = _anchor(match.group(1))
            count = seen.get(base, 0)
            anchors.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return anchors


def _links(file: Path) -> list[str]:
    text = FENCE.sub("", file.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def test_the_anchor_rule_matches_github() -> None:
    assert _anchor("The project file: `orchestrator.yaml` and `orch deploy`") == \
        "the-project-file-orchestratoryaml-and-orch-deploy"
    assert _anchor("When Redis, PostgreSQL or the API restarts") == \
        "when-redis-postgresql-or-the-api-restarts"


@pytest.mark.parametrize("file", _markdown_files(), ids=lambda f: str(f.relative_to(ROOT)))
def test_relative_links_reach_existing_files_and_headings(file: Path) -> None:
    broken = []
    for target in _links(file):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ...: not ours to check offline
        path_part, _, fragment = target.partition("#")
        destination = (file.parent / path_part).resolve() if path_part else file
        if not destination.exists():
            shown = destination.relative_to(ROOT) if destination.is_relative_to(ROOT) else destination
            broken.append(f"{target} (no file {shown})")
        elif fragment and destination.suffix == ".md" and fragment not in _anchors(destination):
            broken.append(f"{target} (no heading '#{fragment}' in {destination.name})")
    assert not broken, f"broken links in {file.relative_to(ROOT)}: {'; '.join(broken)}"
