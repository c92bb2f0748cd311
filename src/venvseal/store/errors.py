"""The store's errors: what went wrong, where, and what to do next."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from venvseal.errors import (
    EXIT_USAGE,
    PathError,
    StoreError,
    UsageError,
    VenvsealError,
    optional_line,
)
from venvseal.hashes import Sha256


class StoreAccessError(StoreError, PathError):
    """The store's root folder (``path``) cannot be created or written (a usage error: exit 2)."""

    exit_code = EXIT_USAGE
    template = ("store at {path} {problem}; pass --store DIR or set VENVSEAL_STORE to a folder "
                "you can write")


@dataclass(eq=False)
class StoreFullError(StoreError):
    """The file system holding the store ran out of space during a build."""

    root: Path
    name: str

    template = ("the store at {root} is full while building {name}; free space (venvseal gc) "
                "or pass --store DIR")


@dataclass(eq=False)
class HashMismatchError(StoreError):
    """A fixed-output path's content does not have the hash declared for it."""

    path: Path
    expected: Sha256
    got: Sha256

    template = ("{mismatch}\nif the new content is expected, declare {got.sri} instead; "
                "otherwise find out which input changed")

    @property
    def mismatch(self) -> str:
        """The mismatch, worded as Nix words it, so users and tools that know Nix's message
        recognise it."""
        return (f"hash mismatch in fixed-output path '{self.path}':\n"
                f"  specified: {self.expected.sri}\n"
                f"  got:       {self.got.sri}")


@dataclass(eq=False)
class UndeclaredHashError(VenvsealError):
    """A fixed output has no declared hash; it was built and its hash is known now.

    ``hint`` is the next step after declaring the hash by hand (the deps stage can also
    write it with ``--update-hash``); nothing was added to the store.
    """

    recipe_file: Path
    key: str
    got: Sha256
    _: KW_ONLY
    hint: str = "or rerun with --update-hash to write it into the recipe"

    template = ('{recipe_file}: {key} is not declared; declare it as\n'
                '  hash = "{got.sri}"{next_step}')

    @property
    def next_step(self) -> str:
        """The hint on a line of its own, or "" if there is none."""
        return optional_line(self.hint)


@dataclass(eq=False)
class StoreNameError(UsageError):
    """A store path name breaks Nix's naming rule."""

    name: str

    template = ("{name!r} is not a valid store path name: use 1 to 211 letters, digits and "
                "'+-._?=', not starting with '.'")
