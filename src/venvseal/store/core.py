"""The content-addressed store: sealed, hashed, locked paths under one root folder.

A path is valid when its entry AND its meta exist (see :mod:`venvseal.store.layout`).
:meth:`Store.add`, the one writer of paths, writes the meta and then renames the sealed tree
into place (:mod:`venvseal.store.publish`); gc deletes the meta first. A crash therefore
leaves at worst one without the other: debris, removed on the next open, add or gc by
whoever takes the path's lock without waiting.

A :class:`Store` pins (holds a shared lock on) every path it reused, fetched or built, and
their references, until it is closed (:mod:`venvseal.store.pins`), so a concurrent gc
(:mod:`venvseal.store.gc`) never deletes a path in use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TypeVar

from venvseal import fsutil
from venvseal.errors import StoreError, UsageError
from venvseal.hashes import Sha256
from venvseal.store import debris, integrity, publish
from venvseal.store import gc as collector
from venvseal.store.errors import (
    HashMismatchError,
    StoreAccessError,
    StoreFullError,
    StoreNameError,
    UndeclaredHashError,
)
from venvseal.store.integrity import VerifyResult
from venvseal.store.layout import (
    CANONICAL_MTIME,
    STORE_DIR,
    Layout,
    PathInfo,
    StorePath,
    check_name,
    default_store_root,
    name_of,
    path_digest,
)
from venvseal.store.nar import NarResult
from venvseal.store.pins import OnWait, Pins
from venvseal.store.publish import Build, build_path, canonical_inputs
from venvseal.store.substitute import Obtained, Realised, Sink, Substituter, TreeSink

__all__ = [
    "CANONICAL_MTIME", "STORE_DIR", "GcResult", "HashMismatchError", "Obtained", "PathInfo",
    "Realised", "Store", "StoreAccessError", "StoreFullError", "StoreNameError", "StorePath",
    "Substituter", "TreeSink", "UndeclaredHashError", "VerifyResult", "add_made",
    "check_name", "copy_path", "default_store_root", "name_of", "path_digest",
]

GcResult = collector.GcResult
BuildInputs = Iterable[StorePath] | Callable[[], Iterable[StorePath]]
T = TypeVar("T")
# add() rebuilds a path a concurrent gc deleted before it could be pinned; never in practice.
_ADD_ATTEMPTS = 3


class Store:
    """A store rooted at one folder; created (and cleared of crash debris) when opened.

    ``substituters`` are asked, in order, for a path that is not valid before it is built
    (see :meth:`realise` and :meth:`substitute`). ``writable=False`` opens an existing
    store for reading only: queries, :meth:`verify` and a dry-run gc.
    """

    def __init__(self, root: Path, substituters: Sequence[Substituter] = (), *,
                 writable: bool = True) -> None:
        self.layout = Layout(root, writable=writable)
        self.root = self.layout.root
        self.substituters: list[Substituter] = list(substituters)
        self.pins = Pins(self.layout)
        if writable:
            debris.clean_debris(self.layout)

    @classmethod
    def open(cls, root: Path) -> Store:
        return cls(root)

    def close(self) -> None:
        """Release this store's pins: a later gc may collect unrooted paths again."""
        self.pins.release_all()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # Names -----------------------------------------------------------------------------

    def make_path(self, name: str, fingerprint: str) -> StorePath:
        """The input-addressed path for ``name`` built from inputs summed up by ``fingerprint``."""
        digest = path_digest(f"input:{check_name(name)}:{fingerprint}")
        return StorePath(self.root / f"{digest}-{name}")

    def make_fixed_path(self, name: str, nar_hash: Sha256) -> StorePath:
        """The fixed-output path for content whose NAR hash is ``nar_hash``: known before
        the content is built."""
        fingerprint = f"fixed:out:r:sha256:{nar_hash.base16}:{check_name(name)}"
        return StorePath(self.root / f"{path_digest(fingerprint)}-{name}")

    @staticmethod
    def logical(path: StorePath) -> PurePosixPath:
        """Where ``path`` is at run time (see STORE_DIR)."""
        return STORE_DIR / path.name

    def parse_path(self, text: str) -> StorePath:
        """The store path ``text`` names (directly, or through a symlink such as an out-link)."""
        path = self.layout.as_store_path(Path(os.path.abspath(text)))
        path = path or self.layout.as_store_path(Path(text).resolve())
        if path is None:
            raise UsageError(f"{text} is not a path in the store at {self.root}; pass "
                             f"{self.root}/<hash>-<name> or an out-link to one")
        return path

    # Queries ---------------------------------------------------------------------------

    def is_valid(self, path: StorePath) -> bool:
        """True when ``path`` is complete in this store (its entry and its meta exist)."""
        return self.layout.is_valid(path)

    def query(self, path: StorePath) -> PathInfo | None:
        """What the store knows of ``path``, or None if it is not valid."""
        return self.layout.read_meta(path) if os.path.lexists(path) else None

    def paths(self) -> list[StorePath]:
        """Every valid path, sorted."""
        return [StorePath(self.root / name) for name in self.layout.valid_names()]

    def verify(self, paths: Sequence[StorePath] | None = None,
               progress: Callable[[int], None] | None = None) -> list[VerifyResult]:
        """Re-hash ``paths`` (every valid path when None, skipping any a concurrent gc
        deletes first) and compare with the recorded hash; each is pinned first."""
        results = []
        for path in self.paths() if paths is None else paths:
            info = self.pin(path)
            if info is None:
                if paths is None:
                    continue
                raise StoreError(f"{path} is not a valid path in the store at {self.root}; "
                                 "build it first")
            results.append(integrity.rehash(info, progress))
        return results

    def check_intact(self, path: StorePath, *, within: str | None = None) -> None:
        """See :func:`venvseal.store.integrity.check_intact`."""
        integrity.check_intact(path, within=within)

    def remove(self, path: StorePath) -> None:
        """Delete ``path`` (for ``venvseal repair``), under its lock; roots are kept."""
        self.pins.release(path)
        fd = self.pins.lock(path, shared=False, on_wait=None)
        try:
            self.layout.meta_file(path.name).unlink(missing_ok=True)
            fsutil.remove_tree(path)
        finally:
            os.close(fd)

    # Writes ----------------------------------------------------------------------------

    def add(self, path: StorePath, produce: Callable[[Path], None], *,
            expected: Sha256 | None = None, references: Sequence[StorePath] = (),
            inputs: Mapping[str, object] | None = None,
            build_inputs: BuildInputs = (),
            progress: Callable[[int], None] | None = None,
            hashed: NarResult | None = None, on_wait: OnWait | None = None) -> PathInfo:
        """Return ``path``'s info, building it first with ``produce`` if it is not valid.

        ``produce(out)`` creates ``out`` (file or folder) in a private temp dir; it is sealed,
        NAR-hashed (``progress`` hears bytes; ``hashed``: the caller's hash of that very
        tree) and renamed into place. A hash other than ``expected`` raises
        :class:`HashMismatchError`, adding nothing. ``references`` must be valid (or
        ``path``); ``build_inputs`` (or a function giving them after ``produce``) are kept
        by gc. ``on_wait(path)`` is called before waiting for another process's lock. A
        valid path is reused unhashed; substituters are not asked (see :meth:`realise`).
        """
        return self._realise(path, produce, _Request(
            expected, tuple(references), canonical_inputs(inputs), build_inputs, progress,
            hashed, on_wait), substitute=False)[0].info

    def realise(self, path: StorePath, produce: Callable[[Path], None], *,
                expected: Sha256 | None = None, references: Sequence[StorePath] = (),
                inputs: Mapping[str, object] | None = None,
                build_inputs: BuildInputs = (),
                on_wait: OnWait | None = None) -> Realised:
        """:meth:`add`, but a path a substituter has is fetched rather than built; says
        how the path was obtained."""
        return self._realise(path, produce, _Request(
            expected, tuple(references), canonical_inputs(inputs), build_inputs, None, None,
            on_wait), substitute=True)[0]

    def _realise(self, path: StorePath, produce: Callable[[Path], T], request: _Request,
                 *, substitute: bool) -> tuple[Realised, tuple[T] | None]:
        self.parse_path(str(path))
        refs = self.pins.references(path, request.references, request.on_wait)
        how: Obtained = "valid"
        fetched: tuple[StorePath, ...] = ()
        made: tuple[T] | None = None  # (what produce returned,) once it ran
        for _ in range(_ADD_ATTEMPTS):
            info = self.pins.valid(path, request.on_wait)
            if info is None:
                if substitute and (got := self._substitute(path, request.expected)):
                    how, fetched = "fetched", got
                    continue
                if built := self._build_locked(path, produce, request.build(refs),
                                               request.on_wait):
                    how, made = "built", built
                continue
            if request.expected is not None and info.nar_hash != request.expected:
                raise HashMismatchError(path, request.expected, info.nar_hash)
            return Realised(info, how, fetched), made
        raise StoreError(f"{path} was deleted by a concurrent 'venvseal gc' each time it was "
                         "built; run the build again")

    def substitute(self, path: StorePath, expected: Sha256 | None = None) -> Realised | None:
        """``path``, pinned, if it is valid or a substituter provides it; else None: for a
        path built elsewhere than :meth:`add` (a fixed output) or whose inputs may not be
        realised yet (a cache hit never fetches them)."""
        how: Obtained
        fetched: tuple[StorePath, ...]
        info, how, fetched = self.pins.valid(path), "valid", ()
        if info is None and (fetched := self._substitute(path, expected)):
            info, how = self.pins.valid(path), "fetched"
        if info is not None and expected is not None and info.nar_hash != expected:
            raise HashMismatchError(path, expected, info.nar_hash)
        return None if info is None else Realised(info, how, fetched)

    def _substitute(self, path: StorePath, expected: Sha256 | None) -> tuple[StorePath, ...]:
        """Ask each substituter for ``path`` in turn; what the first that has it added."""
        for substituter in self.substituters:
            sink = Sink(scratch=self.scratch, parse=lambda name: self.parse_path(
                str(self.root / name)), substitute=self.substitute, add=self.add_tree)
            if substituter.fetch(sink, path, expected) is not None:
                return tuple(sink.added)
        return ()

    def add_tree(self, path: StorePath, tree: Path, *, expected: Sha256 | None = None,
                 hashed: NarResult | None = None, references: Sequence[StorePath] = (),
                 inputs: Mapping[str, object] | None = None) -> PathInfo:
        """Add the finished tree ``tree`` (on the store's file system) as ``path`` by
        renaming it; reused instead if ``path`` is valid."""
        return self.add(path, lambda dest: os.rename(tree, dest), expected=expected,
                        hashed=hashed, references=references, inputs=inputs)

    def _build_locked(self, path: StorePath, produce: Callable[[Path], T],
                      build: Build, on_wait: OnWait | None = None) -> tuple[T] | None:
        """Build ``path`` under its exclusive lock: (what ``produce`` returned,); None if
        another process just did."""
        self.pins.release(path)
        fd = self.pins.lock(path, shared=False, on_wait=on_wait)
        try:
            if self.is_valid(path):
                return None
            debris.remove_debris(self.layout, path.name)
            return (build_path(self.layout, path, produce, build),)
        finally:
            os.close(fd)

    def pin(self, path: StorePath) -> PathInfo | None:
        """Pin ``path`` and its references (gc keeps them until this store is closed);
        its info, or None (and no pin) if it is not valid."""
        return self.pins.valid(path)

    # Roots and gc (venvseal.store.gc) --------------------------------------------------

    def add_root(self, link: Path, target: StorePath) -> None:
        """Make ``link`` a symlink to ``target`` (atomically) and register it as a gc root."""
        link = Path(os.path.abspath(link))
        if self.pin(target) is None:
            raise StoreError(f"cannot point {link} at {target}: it is not in the store at "
                             f"{self.root}; build it first")
        collector.register_root(self.layout, link, target)

    def roots(self) -> list[tuple[Path, StorePath]]:
        """Live roots as (out-link, target), sorted; stale registrations are dropped."""
        return collector.roots(self.layout)

    def gc(self, *, dry_run: bool = False, all_build_inputs: bool = False) -> GcResult:
        """See :func:`venvseal.store.gc.collect`."""
        return collector.collect(self.layout, dry_run=dry_run,
                                 all_build_inputs=all_build_inputs)

    # Scratch space and the outputs index -----------------------------------------------

    def scratch(self) -> AbstractContextManager[Path]:
        """A private, empty folder on the store's file system, removed afterwards: where
        stages build when the store path is not known before the build."""
        return publish.scratch(self.layout)

    def exclusive(self, key: str, *, on_wait: Callable[[], None] | None = None
                  ) -> AbstractContextManager[None]:
        """Hold the store-wide lock named ``key`` (one build of the same inputs at a time);
        ``on_wait()`` is called before blocking when another process holds it."""
        return publish.exclusive(self.layout, key, on_wait)

    def record_output(self, key: str, path: StorePath) -> None:
        """Remember that the inputs summed up by ``key`` produced ``path``."""
        self.layout.record_output(key, path)

    def lookup_output(self, key: str) -> StorePath | None:
        """The valid path recorded for ``key`` by :meth:`record_output`, if any."""
        return self.layout.lookup_output(key)


def add_made(store: Store, path: StorePath, produce: Callable[[Path], T], *,
             references: Sequence[StorePath] = (), build_inputs: BuildInputs = (),
             on_wait: OnWait | None = None) -> tuple[PathInfo, T | None]:
    """:meth:`Store.add`, also giving back what ``produce`` returned: None when it did not
    run (the path was valid, or another process built it meanwhile)."""
    realised, made = store._realise(path, produce, _Request(
        None, tuple(references), None, build_inputs, None, None, on_wait), substitute=False)
    return realised.info, made[0] if made is not None else None


def copy_path(dest: Store, source: Store, path: StorePath) -> PathInfo:
    """Add ``source``'s valid ``path`` to ``dest`` under the same name (hard-linked where
    possible). The copy is re-hashed and must match what ``source`` recorded, so a damaged
    path is refused rather than spread."""
    info = source.pin(path)
    if info is None:
        raise StoreError(f"{path} is not a valid path in the store at {source.root}")
    return dest.add(StorePath(dest.root / path.name), lambda out: fsutil.link_tree(path, out),
                    expected=info.nar_hash,
                    references=[StorePath(dest.root / r.name) for r in info.references],
                    inputs=info.inputs)


@dataclass(frozen=True, slots=True)
class _Request:
    """What :meth:`Store.add` and :meth:`Store.realise` were asked for."""

    expected: Sha256 | None
    references: tuple[StorePath, ...]
    inputs: dict[str, object] | None
    build_inputs: BuildInputs
    progress: Callable[[int], None] | None
    hashed: NarResult | None
    on_wait: OnWait | None

    def build(self, refs: tuple[StorePath, ...]) -> Build:
        return Build(self.expected, refs, self.inputs, self.progress, self.hashed,
                     self.build_inputs)
