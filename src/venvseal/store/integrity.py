"""Is a store path still what was sealed? A cheap stat check, and a full re-hash."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from venvseal import fsutil
from venvseal.errors import StoreCorruptError
from venvseal.hashes import Sha256
from venvseal.store.layout import CANONICAL_MTIME, PathInfo, StorePath
from venvseal.store.nar import nar_hash


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """One path re-hashed: ``ok`` when the content still has the recorded hash."""

    path: StorePath
    ok: bool
    expected: Sha256
    got: Sha256
    changed_files: tuple[str, ...] = ()  # edited entries, by their time stamp and mode


def rehash(info: PathInfo, progress: Callable[[int], None] | None) -> VerifyResult:
    """Hash ``info``'s path again and compare with what was recorded."""
    got = nar_hash(info.path, progress=progress).hash
    ok = got == info.nar_hash
    changed = () if ok else tuple(fsutil.unsealed(info.path, mtime=CANONICAL_MTIME))
    return VerifyResult(info.path, ok, info.nar_hash, got, changed)


def check_intact(path: StorePath, *, within: str | None = None) -> None:
    """Refuse to use ``path`` (or its folder ``within``) if any of its entries was edited
    after it was sealed.

    A stat of every entry, no hashing: cheap enough for every reuse. ``verify`` re-hashes.
    """
    top: Path = path / within if within is not None else path
    if not top.is_dir():
        return
    prefix = f"{within}/" if within is not None else ""
    changed = [prefix + c for c in fsutil.unsealed(top, mtime=CANONICAL_MTIME)]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise StoreCorruptError(str(path), "", "", f"{changed[0]}{more}")
