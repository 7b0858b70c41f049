"""orchestrator.runtime.output in a child process of its own (it takes over descriptors 1 and 2): how lines
are assembled from Python-level writes and from the pipe, and what reaches the console when the
process dies without a word. The worker paths are in tests/integration/test_output_capture.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MAX_LINE = 64 * 1024

CHILD = '''
import json, os, sys
from orchestrator.runtime.output import OutputCapture

lines = []
capture = OutputCapture(lambda fd, text: lines.append([fd, text]))
capture.start()
exec(sys.argv[1])
capture.stop()
with open(sys.argv[2], "w") as file:
    json.dump(lines, file)
'''


def child(code: str, shipped_to: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``code`` under an OutputCapture; the lines it ships are written to ``shipped_to``."""
    # Python 3.12 warns that fork() in a process with threads may deadlock (the fork test's point).
    argv = [sys.executable, "-W", "ignore::DeprecationWarning", "-c", CHILD, code,
            str(shipped_to or os.devnull)]
    return subprocess.run(argv, capture_output=True, timeout=60)


def shipped(code: str, tmp_path: Path) -> tuple[bytes, list[list[object]]]:
    """The console (stdout) and the lines shipped of ``code`` run to its end."""
    done = child(code, tmp_path / "lines.json")
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads((tmp_path / "lines.json").read_text())


@pytest.mark.parametrize("how", ["print", "os.write"])
def test_a_line_longer_than_64_kib_is_shipped_in_pieces_and_the_console_gets_it_whole(
        how: str, tmp_path: Path) -> None:
    text = "a" * MAX_LINE + "b" * MAX_LINE + "c" * 100
    made = f"'a' * {MAX_LINE} + 'b' * {MAX_LINE} + 'c' * 100"  # made there: too long for an argument
    write = f"print({made})" if how == "print" else f"os.write(1, ({made}).encode() + b'\\n')"
    console, lines = shipped(write, tmp_path)
    assert console == text.encode() + b"\n"
    assert lines == [[1, "a" * MAX_LINE], [1, "b" * MAX_LINE], [1, "c" * 100]]


def test_python_writes_and_pipe_writes_keep_their_order_and_share_a_line(tmp_path: Path) -> None:
    console, lines = shipped(
        "print('first')\n"
        "os.write(1, b'second\\n')\n"
        "print('third, begun', end='', flush=True)\n"
        "os.write(1, b' and ended by os.write\\n')\n"
        "import subprocess\n"
        "subprocess.run(['echo', 'fourth'], stdout=sys.stdout, check=True)\n"
        "sys.stdout.buffer.write(b'fifth \\xff\\r\\n')\n"
        "print('on stderr', file=sys.stderr)\n"
        "print('no newline at the end', end='')\n", tmp_path)
    assert console == (b"first\nsecond\nthird, begun and ended by os.write\nfourth\nfifth \xff\r\n"
                       b"no newline at the end")
    assert lines == [[1, "first"], [1, "second"], [1, "third, begun and ended by os.write"], [1, "fourth"],
                     [1, "fifth \\xff"], [2, "on stderr"], [1, "no newline at the end"]]


@pytest.mark.parametrize("death", ["os._exit(7)", "import ctypes; ctypes.string_at(0)",
                                   "import ctypes; ctypes.pythonapi.Py_FatalError(b'gave up')"])
def test_what_python_printed_is_on_the_console_when_the_process_dies_hard(death: str) -> None:
    done = child(f"print('printed'); print('to stderr', file=sys.stderr); {death}")
    assert done.returncode != 0
    assert done.stdout == b"printed\n"
    assert done.stderr.startswith(b"to stderr\n"), done.stderr
    if "ctypes" in death:  # the traceback, written where it survives the process
        assert b"Fatal Python error: " in done.stderr
        assert b'File "<string>", line 1 in <module>' in done.stderr


def test_what_a_forked_child_prints_reaches_the_logs_through_the_parent_s_reader(tmp_path: Path) -> None:
    # A forked child (multiprocessing's default here) has neither reader nor shipper: its Python-level
    # writes go into the pipe, as a subprocess's do.
    console, lines = shipped(
        "import multiprocessing\n"
        "child = multiprocessing.get_context('fork').Process(target=print, args=('from a forked child',))\n"
        "child.start(); child.join()\n"
        "print('after the child', file=sys.stderr)\n", tmp_path)
    assert console == b"from a forked child\n"
    # Both reach the logs; their order is not promised: the child's line travels through the pipe and
    # the reader thread, the parent's is shipped at once (on a loaded machine the parent's can win).
    assert sorted(text for _, text in lines) == ["after the child", "from a forked child"]
    assert sorted(number for number, _ in lines) == [1, 2]
