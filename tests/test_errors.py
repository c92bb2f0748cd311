"""venvseal.errors: messages built by templates over an error's fields, kept across pickling."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from venvseal.errors import (
    EXIT_BUILD,
    CommandError,
    CommandTimeoutError,
    LocatedError,
    PathError,
    VenvsealError,
)


@dataclass(eq=False)
class _Worded(PathError):
    """A subclass that words the problem itself and reads a property and a format spec."""

    size: int

    template = "{path!r} ({size:04d} bytes, {kind}): {problem}"

    @property
    def kind(self) -> str:
        return "empty" if self.size == 0 else "short"


@pytest.mark.parametrize(("error", "message"), [
    (VenvsealError("plain text"), "plain text"),
    (LocatedError("a.toml: deps", "is wrong", "fix it"), "a.toml: deps: is wrong; fix it"),
    (PathError(Path("/p/uv.lock"), "cannot read it"), "/p/uv.lock: cannot read it"),
    (_Worded(PurePosixPath("/x"), "truncated", 0),
     "PurePosixPath('/x') (0000 bytes, empty): truncated"),
    (CommandError("uv sync", ["uv", "sync"], 2, "  \n"), "uv sync failed (exit 2): uv sync"),
    (CommandError("uv sync", ["uv", "sync"], 2, "boom\n\n"),
     "uv sync failed (exit 2): uv sync\nboom"),
    (CommandTimeoutError("uv", ["uv"], -9, "slow\n", timeout=2.5),
     "uv did not finish within 2.5 s and was killed: uv\nslow"),
])
def test_the_message_is_the_template_over_the_fields(error: VenvsealError, message: str) -> None:
    assert str(error) == message
    copy = pickle.loads(pickle.dumps(error))  # as it crosses from a worker process
    assert type(copy) is type(error) and str(copy) == message
    assert copy.exit_code == EXIT_BUILD


def test_a_value_with_braces_is_shown_as_it_is() -> None:
    # Only the template is parsed: a field holding "{...}" is never formatted again.
    assert str(PathError(Path("/{x}"), "{problem}")) == "/{x}: {problem}"
