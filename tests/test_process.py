"""venvseal.process: the one gate for subprocesses; output streamed line by line."""

from __future__ import annotations

import re
import sys

import pytest

from venvseal.deps.stage import _uv_progress
from venvseal.errors import CommandError, CommandTimeoutError
from venvseal.process import run

PRINTS = "import sys, time\nfor i in range(3):\n    print('line', i, flush=True)\n"


def test_each_line_is_heard_as_it_is_printed_and_the_output_kept() -> None:
    heard: list[str] = []
    done = run([sys.executable, "-c", PRINTS], what="printer", on_line=heard.append)
    assert heard == ["line 0", "line 1", "line 2"]
    assert done.output == "line 0\nline 1\nline 2\n" and done.returncode == 0


def test_streamed_lines_have_url_credentials_redacted() -> None:
    heard: list[str] = []
    run([sys.executable, "-c", "print('fetching https://me:s3cret@host/x')"], what="x",
        on_line=heard.append)
    assert heard == ["fetching https://me:***@host/x"]


def test_a_streamed_failure_and_timeout_raise_as_without_streaming() -> None:
    with pytest.raises(CommandError) as failed:
        run([sys.executable, "-c", "print('bad'); raise SystemExit(3)"], what="fails",
            on_line=lambda _line: None)
    assert failed.value.returncode == 3 and "bad" in failed.value.output_tail
    with pytest.raises(CommandTimeoutError) as slow:
        run([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"],
            what="sleeps", timeout=1, on_line=lambda _line: None)
    assert "started" in slow.value.output_tail


def test_only_uvs_progress_lines_are_shown() -> None:
    shown: list[str] = []
    on_line = _uv_progress(shown.append)
    assert on_line is not None
    for line in ["Resolved 52 packages in 3ms", "   Building psycopg-c==3.2.3",
                 "      Built psycopg-c==3.2.3", "warning: something", "Downloading numpy",
                 "Installed 51 packages in 120ms", " + django==5.2"]:
        on_line(line)
    assert shown == ["uv: Resolved 52 packages in 3ms", "uv: Building psycopg-c==3.2.3",
                     "uv: Built psycopg-c==3.2.3", "uv: Downloading numpy",
                     "uv: Installed 51 packages in 120ms"]
    assert _uv_progress(None) is None


@pytest.mark.parametrize(("code", "status"), [("pass", 0), ("raise SystemExit(3)", 3)])
def test_verbose_logs_each_commands_exit_and_time(caplog: pytest.LogCaptureFixture, code: str,
                                                  status: int) -> None:
    """`venvseal -v` says how long each command took (benchmarks/deps_stage.py reads it)."""
    with caplog.at_level("DEBUG", logger="venvseal.process"):
        run([sys.executable, "-c", code], what="a python", check=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("a python:")]
    assert len(lines) == 1
    found = re.fullmatch(r"a python: exit (\d+) after (\d+\.\d{3}) s", lines[0])
    assert found is not None and int(found[1]) == status and float(found[2]) > 0
