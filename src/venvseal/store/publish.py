"""Building one store path: run its producer in a private folder, seal, hash, publish.

The caller holds the path's exclusive lock. Publishing orders its steps for durability and
atomicity: seal (every folder read-only but the top one), hash, one syncfs, write the meta,
rename the tree into place, seal its top folder. A crash at any point leaves debris that
:meth:`Layout.clean_debris` removes (or, after the rename, seals).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from venvseal import fsutil
from venvseal.errors import StoreError
from venvseal.hashes import Sha256
from venvseal.store.errors import HashMismatchError, StoreFullError
from venvseal.store.layout import (
    CANONICAL_MTIME,
    SCRATCH,
    TMP,
    Layout,
    PathInfo,
    StorePath,
    check_key,
    name_of,
    seal_top,
)
from venvseal.store.nar import NarResult, nar_hash

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Build:
    """What :meth:`Store.add` passes down to the build of one path."""

    expected: Sha256 | None
    references: tuple[StorePath, ...]
    inputs: dict[str, object] | None
    progress: Callable[[int], None] | None
    hashed: NarResult | None = None
    build_inputs: Iterable[StorePath] | Callable[[], Iterable[StorePath]] = ()


def build_path(layout: Layout, path: StorePath, produce: Callable[[Path], T],
               build: Build) -> T:
    """Run ``produce`` in a fresh temp dir and publish its output; what ``produce``
    returned. On error leave nothing."""
    work = layout.root / TMP / fsutil.temp_name(path.name)
    try:
        os.mkdir(work, 0o700)
        layout.give(work)
        # The output is built at work/<basename>, one level below the store root like
        # its final place. A link per reference beside it makes a relative symlink from
        # the output into a reference (../<ref>/...) resolve during the build as well.
        for ref in build.references:
            if ref != path:
                os.symlink(f"../../{ref.name}", work / ref.name)
        made = produce(work / path.name)
        publish(layout, path, work, build)
        return made
    except OSError as err:
        if fsutil.is_disk_full(err):
            raise StoreFullError(layout.root, name_of(path)) from err
        raise
    finally:
        fsutil.remove_tree(work)


def publish(layout: Layout, path: StorePath, work: Path, build: Build) -> None:
    """Seal, hash and record ``work/<basename>``, then rename it to ``path``."""
    out = work / path.name
    if not os.path.lexists(out):
        raise StoreError(f"building {name_of(path)} created nothing at {out}; the build "
                         "step must create its output")
    layout.give_tree(out)
    if build.hashed is None or not build.hashed.sealed:  # else sealed as it was hashed
        fsutil.seal_tree(out, mtime=CANONICAL_MTIME)
    # rename(2) moves a folder into another parent only if the folder itself is writable
    # (its '..' entry changes), a check only root bypasses: the top folder stays writable
    # until it is in place, and debris cleaning seals one a crash left open in between.
    if stat.S_ISDIR(os.lstat(out).st_mode):
        os.chmod(out, fsutil.SEALED_DIR | stat.S_IWUSR)
    # Sealing keeps every NAR-visible property (contents, links, the executable bit), so
    # a hash the caller took of the very tree produce() renamed into place still holds.
    nar = build.hashed or nar_hash(out, progress=build.progress)
    if build.expected is not None and nar.hash != build.expected:
        raise HashMismatchError(path, build.expected, nar.hash)
    # Durability: the tree must be on disk before the meta and the rename that publish it.
    # One syncfs(2) rather than an fsync per file: for a 30,000-file tree (300 dirs x 100
    # files of 2 KB, ext4 on virtio) fsync per file took 9.8 to 49 s, syncfs 0.3 to 0.4 s.
    # It also flushes unrelated dirty data on that file system: time, never correctness.
    fsutil.sync_filesystem(work)
    builds = build.build_inputs() if callable(build.build_inputs) else build.build_inputs
    info = PathInfo(path, nar.hash, nar.size, build.references, build.inputs,
                    tuple(sorted(set(builds))))
    meta = layout.write_meta(info, temp=work / "meta.json")
    try:
        os.rename(out, path)
    except BaseException:
        meta.unlink(missing_ok=True)
        raise
    seal_top(path)
    fsutil.fsync_dir(layout.root)


def canonical_inputs(inputs: Mapping[str, object] | None) -> dict[str, object] | None:
    """``inputs`` as it reads back from JSON, so a fresh and a reused PathInfo compare equal."""
    if inputs is None:
        return None
    loaded: dict[str, object] = json.loads(json.dumps(dict(inputs), allow_nan=False))
    return loaded


@contextmanager
def scratch(layout: Layout) -> Iterator[Path]:
    """A private, empty folder on the store's file system, removed afterwards.

    The folder is flock'ed while in use; a crashed process's scratch folder is removed by
    the next store opened on this root.
    """
    work = layout.root / TMP / fsutil.temp_name(SCRATCH)
    os.mkdir(work, 0o700)
    layout.give(work)
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield work
    except OSError as err:
        if fsutil.is_disk_full(err):
            raise StoreFullError(layout.root, "a scratch build") from err
        raise
    finally:
        fsutil.remove_tree(work)
        os.close(fd)


@contextmanager
def exclusive(layout: Layout, key: str, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """Hold the store-wide lock named ``key``, calling ``on_wait()`` before blocking."""
    # The lock file's name starts with '.', so it is never taken for a path's lock.
    name = f".key-{check_key(key)}"
    fd = layout.lock(name, shared=False, wait=False)
    if fd is None:
        if on_wait is not None:
            on_wait()
        fd = layout.lock(name, shared=False, wait=True)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
