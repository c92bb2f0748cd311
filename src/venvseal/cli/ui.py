"""Rendering for the CLI: results on stdout, messages and progress on stderr, or JSON.

Progress bars appear only when stderr is a terminal and JSON output is off, so logs and pipes
stay clean.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from venvseal.netutil import scrub

if TYPE_CHECKING:  # rich costs ~100 ms to import: only progress bars and tables need it
    from rich.console import Console


class Ui:
    """Where the CLI's output goes; one instance per invocation."""

    def __init__(self, *, json_mode: bool, env: Mapping[str, str]) -> None:
        self.json_mode = json_mode
        self._interactive = sys.stderr.isatty() and env.get("TERM") != "dumb"

    def _console(self, *, stderr: bool) -> Console:
        from rich.console import Console

        return Console(stderr=stderr, soft_wrap=True, highlight=False)

    def result(self, data: Mapping[str, Any], *lines: str) -> None:
        """The command's result: ``lines`` for people, ``data`` as JSON for machines."""
        if self.json_mode:
            print(scrub(json.dumps({"ok": True, **data}, indent=2, sort_keys=True)))
        else:
            for line in lines:
                print(scrub(line))

    def table(self, title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        """A table for people (nothing in JSON mode: the data goes through ``result``).

        Drawn to the terminal's width on a terminal; piped, one unwrapped line per row with
        the columns aligned, for grep, cut and head.
        """
        if self.json_mode or not rows:
            return
        if not sys.stdout.isatty():
            print(title)
            for line in plain_table(columns, rows):
                print(line)
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*map(scrub, row))
        self._console(stderr=False).print(table)

    def info(self, message: str) -> None:
        """A note for people on stderr (silent in JSON mode)."""
        if not self.json_mode:
            print(scrub(message), file=sys.stderr, flush=True)

    def fail(self, err: BaseException | None, message: str, code: int, *,
             where: tuple[str, str] | None = None) -> None:
        """Report a failure on stderr: each line prefixed with ``error:``, details (a failed
        import's traceback) indented after it. JSON mode also prints, on stdout, the problems,
        each with its ``file``, ``key`` (``where`` gives them when the error cannot) and
        ``message``."""
        from venvseal.cli.render import error_lines, problems

        message = scrub(message)  # a URL quoted from a recipe or lock keeps its secrets
        if self.json_mode:
            found = (problems(err, message) if err is not None else
                     [{"file": None, "key": None, "message": message}])
            if where is not None:
                found = [{**p, "file": where[0], "key": where[1]} for p in found]
            doc = {"ok": False, "error": message, "exit_code": code, "problems": found}
            self._safe_print(scrub(json.dumps(doc, indent=2)))
        for line in error_lines(err, message) if err is not None else [message]:
            print(f"venvseal: error: {scrub(line)}", file=sys.stderr)

    def _safe_print(self, text: str) -> None:
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.broken_pipe()

    def flush(self) -> None:
        """Flush stdout now, so a reader that left shows as BrokenPipeError here."""
        sys.stdout.flush()

    @staticmethod
    def broken_pipe() -> None:
        """stdout's reader is gone: point stdout at /dev/null so the interpreter's last
        flush does not complain (Python docs, 'Note on SIGPIPE')."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file (tests)
            pass

    @contextmanager
    def progress(self, description: str, total: int | None = None,
                 unit: str = "bytes") -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; draws a bar only on an interactive terminal."""
        if not self._interactive or self.json_mode:
            yield lambda _n: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        columns += [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [
            TextColumn("{task.completed}/{task.total}")]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self._console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def plain_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned lines, never wrapped; the last column is not padded."""
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        return "  ".join([*cells, row[-1]])

    return [line(columns), *map(line, rows)]
