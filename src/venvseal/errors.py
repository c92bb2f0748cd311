"""The one exception root and its families.

Every error a user can meet is a subclass of :class:`VenvsealError`. Its ``str()`` is the
message the user reads: what went wrong, where (file, key, package) and what to do next.
The CLI maps :attr:`VenvsealError.exit_code` to the process exit status; library code never
prints or exits. Foreign exceptions are wrapped once, at the boundary, with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import PurePath
from typing import Any, ClassVar

from venvseal.netutil import scrub

EXIT_OK = 0
EXIT_BUILD = 1  # a build, hash check or verification failed
EXIT_USAGE = 2  # bad command line, recipe or input


class VenvsealError(Exception):
    """Root of every error venvseal raises on purpose.

    An error that carries data is a dataclass (``@dataclass(eq=False)``: exceptions compare
    by identity) whose message is built from its fields: by its :attr:`template`, formatted
    with the error's attributes (``"{path}: {problem}"``, ``"{got.sri}"``, ``"{name!r}"``), or,
    where the message needs logic, by overriding :meth:`message`. A plain
    ``VenvsealError("text")`` reads as its text.
    """

    exit_code: int = EXIT_BUILD
    template: ClassVar[str] = ""

    def message(self) -> str:
        """What went wrong, where, and what to do next."""
        if self.template:
            return self.template.format_map(_Attributes(self))
        return super().__str__()

    def __str__(self) -> str:
        return self.message()

    def __reduce__(self) -> tuple[Any, ...]:
        # A dataclass error's fields are in __dict__, not (all) in args: pickle both, so an
        # error crosses from a worker process intact.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class _Attributes:
    """An object's attributes (fields, class constants, properties) as a format mapping."""

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        return getattr(self._obj, name)


def _rebuild(cls: type[VenvsealError], args: tuple[Any, ...],
             state: dict[str, Any]) -> VenvsealError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


def optional_line(text: str) -> str:
    """``text`` on a line of its own, to end a message with; "" if ``text`` is blank."""
    return f"\n{text}" if text.strip() else ""


@dataclass(eq=False)
class LocatedError(VenvsealError):
    """A problem with one thing: ``where`` it is (a file, a key, a fetch), the ``problem``,
    and the ``hint`` (what to do next), read as ``where: problem; hint``."""

    where: str
    problem: str
    hint: str

    template = "{where}: {problem}; {hint}"


@dataclass(eq=False)
class PathError(VenvsealError):
    """A problem with one file or folder: its ``path`` and the ``problem``, read as
    ``path: problem``; a subclass may word it in its own template and add what to do next."""

    path: PurePath
    problem: str

    template = "{path}: {problem}"


class UsageError(VenvsealError):
    """The command line or an input named on it is wrong (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file: where (a key path) and what."""

    where: str  # key path such as ``substitute[2].file``; "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(eq=False)
class RecipeError(VenvsealError):
    """A recipe is missing, malformed or invalid; carries every problem found at once."""

    exit_code = EXIT_USAGE

    file: str
    problems: Sequence[Problem]

    def __post_init__(self) -> None:
        self.problems = tuple(self.problems)

    def message(self) -> str:
        # A problem may quote a URL from the recipe: its credentials are never shown.
        return scrub("\n".join(f"{self.file}: {p}" for p in self.problems))


@dataclass(eq=False)
class HashFormatError(UsageError):
    """A hash string is not in a form venvseal reads."""

    text: str
    where: str = ""

    def message(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        return (
            f"{prefix}{self.text!r} is not a sha256 hash; write it as SRI "
            "('sha256-' + 44 base64 characters), 'sha256:' + 52 nix32 or 64 hex characters, "
            "or leave it empty to be told the hash"
        )


class StoreError(VenvsealError):
    """The store cannot be used or a store path is unknown or damaged."""


@dataclass(eq=False)
class StoreCorruptError(StoreError):
    """A store path's content no longer matches the hash recorded when it was added."""

    path: str
    expected: str
    got: str
    first_difference: str = ""

    def message(self) -> str:
        where = f" (changed: {self.first_difference})" if self.first_difference else ""
        hashes = f": recorded {self.expected}, now {self.got}" if self.expected else ""
        return (f"store path {self.path} was modified after it was added{where}{hashes}; "
                f"repair it with 'venvseal repair [RECIPE] {self.path}'")


@dataclass(eq=False)
class CommandError(VenvsealError):
    """An external command failed; carries the command and the tail of its output."""

    what: str
    argv: Sequence[str]
    returncode: int
    output_tail: str

    template = "{what} failed (exit {returncode}): {command}{output}"

    def __post_init__(self) -> None:
        self.argv = tuple(self.argv)

    @property
    def command(self) -> str:
        """The command line as shown to the user."""
        return " ".join(self.argv)

    @property
    def output(self) -> str:
        """The output's tail on lines of its own after the command, or "" if it is blank."""
        return optional_line(self.output_tail.rstrip())


@dataclass(eq=False)
class CommandTimeoutError(CommandError):
    """An external command ran past its time limit and was killed (``returncode`` -9)."""

    _: KW_ONLY
    timeout: float

    template = "{what} did not finish within {timeout:g} s and was killed: {command}{output}"
