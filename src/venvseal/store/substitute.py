"""Substituters (binary caches) and the narrow sink through which they add what they fetch.

A substituter never sees the store: it gets a :class:`TreeSink` that offers scratch space,
realises a reference, and adds one finished tree; nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from venvseal.hashes import Sha256
from venvseal.store.layout import PathInfo, StorePath
from venvseal.store.nar import NarResult

# How a path came to be valid: it was already, a substituter fetched it, or it was built.
Obtained = Literal["valid", "fetched", "built"]


@dataclass(frozen=True, slots=True)
class Realised:
    """A valid, pinned path and how it was obtained; ``fetched`` lists every path a
    substituter added on the way (the references it fetched first, then the path)."""

    info: PathInfo
    how: Obtained
    fetched: tuple[StorePath, ...] = ()

    @property
    def path(self) -> StorePath:
        return self.info.path


class TreeSink(Protocol):
    """What a substituter may do to the store: no more than add what it fetched."""

    def scratch(self) -> AbstractContextManager[Path]:
        """A private folder on the store's file system, removed afterwards."""
        ...

    def reference(self, basename: str) -> StorePath | None:
        """The store path ``basename`` names, made valid (from the store or a substituter)
        and pinned; None if neither has it. Raises on a name that is not a store path's."""
        ...

    def add_tree(self, path: StorePath, tree: Path, *, nar: NarResult,
                 references: Sequence[StorePath], inputs: Mapping[str, object]) -> PathInfo:
        """Seal ``tree`` (whose NAR hash is ``nar``) and rename it into place as ``path``."""
        ...


class Substituter(Protocol):
    """Somewhere a missing path can be fetched from instead of built (see venvseal.oci.cache)."""

    def fetch(self, sink: TreeSink, path: StorePath, expected: Sha256 | None
              ) -> PathInfo | None:
        """Add ``path`` through ``sink`` and return its info; None, with nothing added,
        when it cannot."""
        ...


class Sink:
    """The :class:`TreeSink` one substitution gets; ``added`` records what it added."""

    def __init__(self, *, scratch: Callable[[], AbstractContextManager[Path]],
                 parse: Callable[[str], StorePath],
                 substitute: Callable[[StorePath], Realised | None],
                 add: Callable[..., PathInfo]) -> None:
        self._scratch, self._parse, self._substitute, self._add = scratch, parse, substitute, add
        self.added: list[StorePath] = []

    def scratch(self) -> AbstractContextManager[Path]:
        return self._scratch()

    def reference(self, basename: str) -> StorePath | None:
        ref = self._parse(basename)
        found = self._substitute(ref)
        if found is None:
            return None
        self.added.extend(p for p in found.fetched if p not in self.added)
        return ref

    def add_tree(self, path: StorePath, tree: Path, *, nar: NarResult,
                 references: Sequence[StorePath], inputs: Mapping[str, object]) -> PathInfo:
        info = self._add(path, tree, expected=nar.hash, hashed=nar, references=references,
                         inputs=inputs)
        self.added.append(path)
        return info
