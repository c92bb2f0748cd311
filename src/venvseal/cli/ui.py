"""Rendering for the CLI: results on stdout, messages and progress on stderr, or JSON.

Progress bars appear only when stderr is a terminal and JSON output is off, so logs and pipes
stay clean.
"""

from __future__ import annotations

import json
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
        """A table for people (nothing in JSON mode: the data goes through ``result``)."""
        if self.json_mode or not rows:
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

    def error(self, message: str, code: int) -> None:
        """Report a failure: each line prefixed with ``error:``; JSON mode also on stdout."""
        message = scrub(message)  # a URL quoted from a recipe or lock keeps its secrets
        if self.json_mode:
            print(json.dumps({"ok": False, "error": message, "exit_code": code}, indent=2))
        for line in message.splitlines() or [message]:
            print(f"venvseal: error: {line}", file=sys.stderr)

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
