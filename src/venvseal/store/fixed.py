"""Fixed outputs: content named by its declared NAR hash, built or fetched, then checked.

The one realiser of the deps stage and of ``[[fetch]]``: name the path from the declared
hash, try the store and its substituters, else build in scratch space, NAR-hash, compare
with the declared hash (refusing an undeclared or a different one), and add by rename.
Nothing enters the store unless its hash is the declared one (or the caller accepts any,
as ``--update-hash`` does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from venvseal import fsutil
from venvseal.errors import VenvsealError
from venvseal.hashes import Sha256
from venvseal.store.core import CANONICAL_MTIME, Realised, Store, StorePath
from venvseal.store.errors import HashMismatchError
from venvseal.store.nar import NarResult, nar_hash

T = TypeVar("T")


@contextmanager
def flushing(path: Path) -> Iterator[None]:
    """Start writing the file system of ``path`` back to disk beside the block's work.

    A head start, not a guarantee: what must be durable is still made so by a later
    :func:`sync_filesystem`, which then finds little left to write. A failure here is left
    for that one to report. The caller's work (hashing the tree just built) needs the CPU,
    writeback the disk, so the two overlap (issue 16: the deps stage's publish waited
    0.02-0.07 s on the demo's 50 MB for a flush that could have run while it hashed).
    """
    def flush() -> None:
        with suppress(OSError):
            fsutil.sync_filesystem(path)

    worker = threading.Thread(target=flush, name="venvseal-flush", daemon=True)
    worker.start()
    try:
        yield
    finally:
        worker.join()


@dataclass(frozen=True, kw_only=True, slots=True)
class FixedOutput:
    """What names and checks one fixed output.

    ``undeclared(got)`` is the error raised when no hash is declared (it names the recipe key
    to declare); ``mismatch(path, declared, got)`` the one when another hash is (default:
    :class:`HashMismatchError`); with ``accept_any`` the built content is added whatever its
    hash.
    """

    name: str
    declared: Sha256 | None
    inputs: Mapping[str, object] = field(default_factory=dict)
    undeclared: Callable[[Sha256], VenvsealError]
    mismatch: Callable[[StorePath, Sha256, Sha256], VenvsealError] = HashMismatchError
    accept_any: bool = False
    tree: str = "out"  # the tree's name in scratch space (a build may record its path)


@dataclass(frozen=True, slots=True)
class Built(Generic[T]):
    """A fixed output built and added, and what its builder returned."""

    realised: Realised
    report: T


def try_declared(store: Store, out: FixedOutput) -> Realised | None:
    """The output's path if it is valid or a substituter has it (pinned), else None."""
    if out.declared is None or out.accept_any:
        return None
    return store.substitute(store.make_fixed_path(out.name, out.declared), out.declared)


def seal_and_hash(tree: Path, report: T, seal_mtime: int) -> tuple[NarResult, T]:
    """The plain ``hash_tree`` of :func:`build_fixed`: the tree sealed as it is hashed."""
    return nar_hash(tree, seal_mtime=seal_mtime), report


def build_fixed(store: Store, out: FixedOutput, build: Callable[[Path, Path], T], *,
                inputs_of: Callable[[T], Mapping[str, object]] = lambda _report: {},
                on_hash: Callable[[], None] = lambda: None,
                hash_tree: Callable[[Path, T, int], tuple[NarResult, T]] = seal_and_hash,
                ) -> Built[T]:
    """Run ``build(tree, scratch)`` to create ``tree`` in scratch space, check its hash and
    add it, recording ``out.inputs`` and ``inputs_of(report)``; the store is unchanged when
    the hash is refused. ``hash_tree(tree, report, mtime)`` seals the tree with ``mtime``
    as it hashes it, and may finish the build in the same read (the deps stage's reference
    search does); it returns the hash and the report."""
    with store.scratch() as work:
        tree = work / out.tree
        report = build(tree, work)
        on_hash()
        # Sealed in the hash's walk (one walk, not two); publishing then only renames it.
        # The tree's bytes go to disk meanwhile, so the publish's flush has little left.
        with flushing(work):
            hashed, report = hash_tree(tree, report, CANONICAL_MTIME)
        got = hashed.hash
        check(store, out, got)
        info = store.add_tree(store.make_fixed_path(out.name, got), tree, expected=got,
                              hashed=hashed, inputs={**out.inputs, **inputs_of(report)})
    return Built(Realised(info, "built"), report)


def check(store: Store, out: FixedOutput, got: Sha256) -> None:
    """Refuse ``got`` unless it is the declared hash (or any hash is accepted)."""
    if out.accept_any:
        return
    if out.declared is None:
        raise out.undeclared(got)
    if got != out.declared:
        raise out.mismatch(store.make_fixed_path(out.name, out.declared), out.declared, got)


def realise_fixed(store: Store, out: FixedOutput,
                  build: Callable[[Path, Path], Mapping[str, object]]) -> Realised:
    """The output's path: valid, fetched from a substituter, or built and checked
    (``build`` returns what it fetched, recorded with ``out.inputs``)."""
    found = try_declared(store, out)
    if found is not None:
        return found
    return build_fixed(store, out, build, inputs_of=lambda extra: extra).realised
