"""The CLI's reading of what is typed, no server needed: ``checks.delay`` (``--start-in``),
``parse_key_values`` (``--param`` / ``--job-variable``), input refused before sending, tables, and
options refused before anything starts."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from orchestrator.cli.checks import delay
from orchestrator.cli.output import parse_key_values

# --- --start-in's delay ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30", 30),
        ("30s", 30),
        ("30 sec", 30),
        ("1 second", 1),
        ("30 seconds", 30),
        ("5m", 300),
        ("5 min", 300),
        ("1 minute", 60),
        ("5 minutes", 300),
        ("2h", 7200),
        ("1 hour", 3600),
        ("2 hours", 7200),
        ("1d", 86400),
        ("1 day", 86400),
        ("3 days", 3 * 86400),
        ("1.5h", 5400),
        ("0.5m", 30),
        ("0s", 0),
        ("  7m  ", 420),
    ],
)
def test_a_delay_accepts(text: str, seconds: float) -> None:
    assert delay(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "   ", "m", "5x", "-5s", "1 month", "1ms", "5 m s", "1e3s", "2 hrs", "5.m", ".5m", "five minutes"]
)
def test_a_delay_refuses(text: str) -> None:
    """As the option parser's own refusal (a usage error naming the option), with the forms it takes."""
    with pytest.raises(typer.BadParameter) as caught:
        delay(text)

    assert caught.value.message == f"{text!r} is not a duration of 0 or more like 30s, 5m, 2h or 1d"


def test_a_delay_past_the_calendar_is_refused() -> None:
    with pytest.raises(typer.BadParameter, match="the run would start after the year 9999"):
        delay("9999999999d")


# --- parse_key_values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pair, key, value",
    [
        ("n=7", "n", 7),
        ("f=1.5", "f", 1.5),
        ("b=true", "b", True),
        ("b=false", "b", False),
        ("z=null", "z", None),
        ("s=hello", "s", "hello"),
        ('q="7"', "q", "7"),
        ("l=[1, 2]", "l", [1, 2]),
        ('d={"a": {"b": 1}}', "d", {"a": {"b": 1}}),
        ("e=", "e", ""),
        ("eq=a=b", "eq", "a=b"),
        ("sp=hello world", "sp", "hello world"),
        ("broken={not json", "broken", "{not json"),
        ("True=True", "True", "True"),
    ],
)
def test_parse_key_values_reads_json_when_it_parses(pair: str, key: str, value: Any) -> None:
    parsed = parse_key_values([pair], "--param")

    assert parsed == {key: value}
    assert type(parsed[key]) is type(value)


def test_parse_key_values_several_pairs_later_wins() -> None:
    parsed = parse_key_values(["a=1", "b=two", "a=3"], "--param")

    assert parsed == {"a": 3, "b": "two"}


def test_parse_key_values_of_nothing_is_empty() -> None:
    assert parse_key_values([], "--param") == {}


@pytest.mark.parametrize("pair", ["novalue", "=value", ""])
def test_parse_key_values_rejects_pairs_without_key_or_equals(
    pair: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as caught:
        parse_key_values(["ok=1", pair], "--job-variable")

    assert caught.value.exit_code == 1
    err = capsys.readouterr().err
    assert "--job-variable expects key=value" in err
    assert repr(pair) in err


# --- input the CLI checks before sending ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv, says",
    [
        (["api-key", "create", "k", "--scope", "nope"], "scopes.0: Input should be 'admin'"),
        (["api-key", "create", "k", "--scope", "read", "--pool", "p"], "add the worker scope"),
        (["api-key", "create", "", "--scope", "read"], "name: cannot be empty"),
    ],
)
def test_input_a_model_refuses_is_one_error_line_not_a_traceback(
    argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input models outside ``orchestrator.schemas``'s re-exports (here ``ApiKeyCreate``) get the
    same one-line answer as the others; nothing is sent, so no server is needed."""
    from orchestrator.cli.main import main

    monkeypatch.setenv("ORCH_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr("sys.argv", ["orch", *argv])
    with pytest.raises(SystemExit) as caught:
        main()

    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: invalid api key: ") and says in err, err
    assert len(err.splitlines()) == 1 and "Value error" not in err, err


# --- tables -----------------------------------------------------------------------------------------


def test_a_table_shows_instants_to_the_second_and_none_as_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """As ``orch flow-run ls`` shows its times; ``orch api-key ls`` passes its instants as they are."""
    from orchestrator.cli.output import table

    created = dt.datetime(2026, 12, 6, 13, 34, 4, 476260, tzinfo=dt.UTC)
    table("API keys", ["created", "expires", "uses"], [[created, None, 3]])

    out = capsys.readouterr().out
    assert "2026-12-06T13:34:04+00:00" in out and ".476260" not in out and "None" not in out


# --- orch dev -----------------------------------------------------------------------------------------


def test_orch_dev_refuses_a_limit_below_one_before_it_starts_anything(tmp_path: Path) -> None:
    """Not a server left running without its worker, which said so in the words of
    ``python -m orchestrator.cli.main worker start``. (The port is one no server could take either.)"""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ORCH_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's code
    dev = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "dev", "--limit", "0", "--port", "70000"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = dev.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        dev.kill()
        out, err = dev.communicate()
    assert dev.returncode == 2, out + err
    assert "--limit" in err and "worker start" not in err, err
    assert not (tmp_path / "home").exists()  # no database, no broker: nothing started


# --- usage errors: one line, exit 2, as every other error ------------------------------------------


def orch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "ORCH_API_URL": "http://127.0.0.1:9/api",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "80"}  # this checkout's code
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize(("args", "said"), [
    (["dev", "--limit", "0"], "Invalid value for '--limit': Input should be greater than or equal to 1 (see '"),
    (["server", "start", "--port", "x"], "Invalid value for '--port'"),
    # Numbers out of range: the option parser's answer too, also where `orch server start` is
    # served without typer (cli/main.py), not serve()'s own refusal with exit 1.
    (["server", "start", "--port", "70000"],
     "Invalid value for '--port': Input should be less than or equal to 65535"),
    (["server", "start", "--port=0"], "Invalid value for '--port': Input should be greater than or equal to 1"),
    (["server", "start", "--port", "-1"], "Invalid value for '--port'"),
    (["server", "start", "--host", "::1", "--processes", "0"],
     "Invalid value for '--processes': Input should be greater than or equal to 1"),
    (["dev", "--port", "65536"], "Invalid value for '--port': Input should be less than or equal to 65535 (see '"),
    (["worker", "start", "--limit", "x"], "Invalid value for '--limit'"),
    # Values the API would refuse: refused while parsing, before any request, naming the range.
    (["work-queue", "create", "q", "--pool", "p", "--priority", "99999999999999"],
     "Invalid value for '--priority': Input should be less than or equal to 2147483647 (see '"),
    (["work-pool", "create", "p", "--concurrency-limit", "2147483648"],
     "Invalid value for '--concurrency-limit': Input should be less than or equal to 2147483647 (see '"),
    (["api-key", "create", "k", "-s", "read", "--expires-in", "0"],
     "Invalid value for '--expires-in': '0' is out of range; give more than 0 s and at most 36500 days"),
    (["api-key", "create", "k", "-s", "read", "--expires-in", "36501d"], "Invalid value for '--expires-in'"),
    (["deployment", "run", "a/b", "--watch", "--timeout", "inf"],
     "Invalid value for '--timeout': inf is not a finite number of seconds (see '"),
    (["deployment", "run", "a/b", "--watch", "--timeout", "nan"], "Invalid value for '--timeout'"),
    (["worker", "check", "--pool", "p", "--timeout", "inf"], "Invalid value for '--timeout': inf is not a finite"),
    # A wait no socket can time: was an OverflowError's traceback.
    (["worker", "check", "--pool", "p", "--timeout", "1e10"],
     "Invalid value for '--timeout': 1e+10 s is longer than this machine can wait; give at most 9223372036 s"),
    # Durations: the option parser's answer, naming the range, before any request or file read
    # (they were exit 1 after the command began; `--older-than 99999999d` a traceback).
    (["deployment", "schedule", "create", "a/b", "--interval", "inf"],
     "Invalid value for '--interval': interval must be a finite number of seconds (got 'inf'); give at least 1 s"),
    (["deployment", "schedule", "create", "a/b", "--interval", "0"],
     "Invalid value for '--interval': interval must be at least 1 second (got 0 s) (see '"),
    (["deployment", "schedule", "create", "a/b", "--interval", "-5"], ("Invalid value for '--interval': interval must "
                                                                       "be at least 1 second (got -5 s)")),
    (["deployment", "schedule", "create", "a/b", "--interval", "nan"], ("Invalid value for '--interval': interval must "
                                                                        "be a finite number of seconds")),
    (["deployment", "schedule", "create", "a/b", "--interval", "1e400"], "Invalid value for '--interval'"),
    (["deploy", "--interval", "PT0S"], "Invalid value for '--interval': interval must be at least 1 second (got 0 s)"),
    (["deploy", "--interval", "inf"], "Invalid value for '--interval': interval must be a finite number"),
    (["deployment", "run", "a/b", "--start-in", "-5s"],
     "Invalid value for '--start-in': '-5s' is not a duration of 0 or more like 30s, 5m, 2h or 1d (see '"),
    (["deployment", "run", "a/b", "--start-in", "inf"], "Invalid value for '--start-in': 'inf' is not a duration"),
    (["deployment", "run", "a/b", "--start-at", "tomorrow"],
     "Invalid value for '--start-at': 'tomorrow' is not an ISO 8601 time like 2026-01-31T09:00:00+00:00 (see '"),
    (["deployment", "backfill", "a/b", "--start", "x", "--end", "2026-01-01"], "Invalid value for '--start': 'x'"),
    (["db", "prune", "--older-than", "0"],
     "Invalid value for '--older-than': '0' is out of range; give more than 0 s and at most 36500 days"),
    (["db", "prune", "--older-than", "99999999d"], "Invalid value for '--older-than': '99999999d' is out of range"),
    (["db", "prune", "--older-than", "36501d"], "Invalid value for '--older-than': '36501d' is out of range"),
    (["db", "prune", "--older-than", "inf"], "Invalid value for '--older-than': 'inf' is not a duration; give more"),
    (["db", "prune", "--older-than", "-5d"], "Invalid value for '--older-than': '-5d' is out of range"),
    # Local counts with no bound of the API's: a typo's bound (10,000 runs at once; 4 processes per CPU).
    (["worker", "start", "--pool", "p", "--limit", "10001"],
     "Invalid value for '--limit': Input should be less than or equal to 10000 (see '"),
    (["worker", "start", "--pool", "p", "--limit=99999999999"], "Invalid value for '--limit': Input should be less"),
    (["dev", "--limit", "10001"], "Invalid value for '--limit': Input should be less than or equal to 10000 (see '"),
    (["server", "start", "--processes", "100000"],
     "Invalid value for '--processes': 100000 is more than 4 per CPU of this machine; give 1 to "),
    (["flow-run", "ls", "--state", "bogus"],
     "Invalid value for '--state': unknown state 'bogus'; a type (SCHEDULED, PENDING, RUNNING, "),
    (["worker", "start", "--pool"], "Option '--pool' requires an argument (see '"),
    (["deployment", "run"], "Missing argument 'NAME' (see '"),
    (["deployment", "rn", "x"], "No such command 'rn'. Did you mean 'run'?"),
    (["--bogus"], "No such option: --bogus"),
    (["nope"], "No such command 'nope'"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args: list[str], said: str) -> None:
    done = orch(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: {said}"), done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.rstrip().endswith(" --help')"), done.stderr
    assert "╭" not in done.stderr and "Usage:" not in done.stderr, done.stderr


def test_help_is_unchanged_by_the_one_line_errors() -> None:
    helped = orch("dev", "--help")
    assert helped.returncode == 0 and "Usage:" in helped.stdout and "--limit" in helped.stdout, helped
    alone = orch("deployment")  # a group typed alone: its help, click's exit code 2
    assert alone.returncode == 2 and "Commands" in alone.stdout and "Error" not in alone.stderr, alone


def test_a_start_delay_past_the_calendar_is_one_error_line() -> None:
    """``--start-in 99999999d`` is a duration Python holds, but now plus it is not a date: refused
    while parsing, before anything is sent, not an OverflowError's traceback."""
    done = orch("deployment", "run", "a/b", "--start-in", "99999999d")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: Invalid value for '--start-in': '99999999d' is too large: the run would "
                                  "start after the year 9999 (see '"), done.stderr


def test_processes_one_above_four_per_cpu_is_refused_and_the_setting_too(tmp_path: Path) -> None:
    """The bound follows the machine (``checks.max_processes``); ``ORCH_SERVER_PROCESSES`` above it is an
    invalid setting (exit 2) before anything starts, where SQLite's own refusal came after."""
    from orchestrator.cli.checks import max_processes

    above = str(max_processes() + 1)
    done = orch("server", "start", "--processes", above)
    assert done.returncode == 2, done.stderr
    assert f"give 1 to {max_processes()} " in done.stderr and done.stderr.count("\n") == 1, done.stderr
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ORCH_HOME": str(tmp_path / "home"),
           "ORCH_SERVER_PROCESSES": above, "ORCH_SERVER_PORT": "9",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    started = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "server", "start"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 2, started.stderr
    assert started.stderr == (f"Error: invalid setting: ORCH_SERVER_PROCESSES: {above}; give 1 to {max_processes()} "
                              "(4 per CPU of this machine)\n"), started.stderr


def test_usage_lines_name_arguments_plainly_and_help_paragraphs_flow() -> None:
    """``NAME`` as docs/cli.md writes it (typer 0.29 wrote ``{NAME}``), and a docstring's own line breaks
    are not kept in the middle of a sentence of the help."""
    helped = orch("work-pool", "provision-infrastructure", "--help")
    assert helped.returncode == 0, helped.stderr
    text = " ".join(helped.stdout.split())
    assert "provision-infrastructure [OPTIONS] NAME Make what" in text, helped.stdout
    assert "{NAME}" not in helped.stdout
    assert "the namespace, the worker's ServiceAccount with a Role" in text, helped.stdout
    assert "[OPTIONS] [NAMES...]" in orch("deploy", "--help").stdout


def test_a_concurrency_limit_the_api_cannot_hold_is_a_usage_error() -> None:
    """The argument's own check (it takes -1 as a value, not an option): both ends of the range."""
    for limit in ("-1", "2147483648"):
        done = orch("work-pool", "set-concurrency-limit", "p", "--", limit)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"Error: concurrency limit {limit}: give 0 to 2147483647 runs at once"), done.stderr
        assert "cannot reach" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_the_cli_checks_match_the_api_schemas() -> None:
    import datetime as dt

    from orchestrator.cli import checks
    from orchestrator.schemas import base
    from orchestrator.schemas.api_keys import ApiKeyCreate

    assert checks.INT32_MAX == base.INT32_MAX
    limits = {type(m).__name__: m for m in ApiKeyCreate.model_fields["expires_in"].metadata}
    assert limits["Le"].le == dt.timedelta(days=checks.API_KEY_LIFETIME_DAYS)
