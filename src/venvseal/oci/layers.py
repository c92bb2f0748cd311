"""Image layers: what goes into each (planning), and the deterministic tar that holds it.

A layer is planned from the runtime closure's files (:func:`plan_runtime`) or from store
paths (:func:`plan_store_paths`), then written by :func:`write_layer`: entries sorted, every
folder before what it holds, uid/gid 0 without names, every time :data:`MTIME` (the store's
own, 1 s after the epoch), PAX headers for long or non-ASCII names (image-spec's
"reproducible" advice, and what Nix's dockerTools does). File modes are the store's
(0444/0555) and the toolchain's; folders under ``/venvseal`` are 0755 rather than the
store's 0555, so extracting a later layer into them, or a derived image's build step, works
without root's override. The tar is compressed on the way (:mod:`venvseal.oci.compress`)
and both forms are hashed as they pass.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, cast

from venvseal.errors import VenvsealError
from venvseal.oci.compress import Compression, Sink, open_compressor
from venvseal.oci.model import Digest
from venvseal.oci.runtime import RuntimeClosure
from venvseal.store.core import CANONICAL_MTIME, STORE_DIR

MTIME = CANONICAL_MTIME  # every entry's time: the store's, 1970-01-01T00:00:01Z
STORE_DIR_MODE = 0o755
# Containers expect a world-writable /tmp; it is no file of the runtime closure.
SKELETON = ((PurePosixPath("/tmp"), 0o1777),)
COPY_BUFFER = 1 << 20  # bytes per read of a file into the tar (tarfile's default: 16 KiB)

EntryKind = Literal["file", "dir", "symlink", "hardlink"]


class ImageError(VenvsealError):
    """The image cannot be made from the closure, or an archive is not one we can read."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One tar entry: ``target`` is a symlink's target or the path a hard link repeats."""

    path: PurePosixPath  # absolute, in the image
    kind: EntryKind
    mode: int
    host: Path | None = None
    size: int = 0
    target: str = ""
    content: bytes | None = None  # a file venvseal generated (no host file)


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """What goes into one layer, sorted with every folder before what it holds."""

    what: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Layer:
    """A written layer: compressed digest and size, and the uncompressed tar's digest."""

    what: str
    digest: Digest
    size: int
    diff_id: Digest
    entries: int
    media_type: str


class _Planner:
    """Collects a layer's entries, adding the folders they need (0755 unless given)."""

    def __init__(self) -> None:
        self._entries: dict[PurePosixPath, Entry] = {}
        self._inodes: dict[PurePosixPath, tuple[int, int]] = {}

    def add(self, path: PurePosixPath, host: Path, *, keep_dir_mode: bool) -> None:
        """Add ``host`` (not followed if a symlink) as ``path``."""
        try:
            st = os.lstat(host)
        except OSError as err:
            raise ImageError(f"cannot read {host} for {path} in the image ({err.strerror}); "
                             "rebuild the closure or fix the toolchain root") from err
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            entry = Entry(path, "dir", mode if keep_dir_mode else STORE_DIR_MODE)
        elif stat.S_ISLNK(st.st_mode):
            entry = Entry(path, "symlink", 0o777, target=os.readlink(host))
        elif stat.S_ISREG(st.st_mode):
            entry = Entry(path, "file", mode, host=host, size=st.st_size)
            if st.st_nlink > 1:
                self._inodes[path] = (st.st_dev, st.st_ino)
        else:
            raise ImageError(f"{host} ({path} in the image) is not a file, folder or symlink; "
                             "an image holds no device nodes, sockets or pipes")
        self.folder(path.parent)
        self._entries[path] = entry

    def generated(self, path: PurePosixPath, content: bytes) -> None:
        """Add a file venvseal wrote itself (mode 0644, as the root's /etc files are)."""
        self.folder(path.parent)
        self._entries[path] = Entry(path, "file", 0o644, size=len(content), content=content)

    def folder(self, path: PurePosixPath, mode: int = STORE_DIR_MODE) -> None:
        """Add folder ``path`` and its parents unless present."""
        while path != path.parent and path not in self._entries:
            self._entries[path] = Entry(path, "dir", mode)
            path, mode = path.parent, STORE_DIR_MODE

    def plan(self, what: str) -> LayerPlan:
        """The entries sorted parents first; a file seen again by inode becomes a hard link."""
        seen: dict[tuple[int, int], PurePosixPath] = {}
        entries = []
        for path in sorted(self._entries, key=lambda p: p.parts):
            entry = self._entries[path]
            inode = self._inodes.get(path)
            if inode is not None and inode in seen:
                entry = Entry(path, "hardlink", entry.mode, target=str(seen[inode]))
            elif inode is not None:
                seen[inode] = path
            entries.append(entry)
        return LayerPlan(what, tuple(entries))


def _tree(root: Path) -> Iterator[tuple[PurePosixPath, Path, bool]]:
    """(relative path, host path, is an empty folder) for everything under ``root``."""
    pending = [PurePosixPath()]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel) as it:
            children = sorted(it, key=lambda e: e.name)
        if not children and rel.parts:
            yield rel, root / rel, True
        for child in children:
            if child.is_dir(follow_symlinks=False):
                pending.append(rel / child.name)
            else:
                yield rel / child.name, Path(child.path), False


def plan_runtime(what: str, runtime: RuntimeClosure) -> LayerPlan:
    """The runtime closure's files at their paths, with a world-writable /tmp."""
    planner = _Planner()
    for f in runtime.files:
        if f.content is not None:
            planner.generated(f.path, f.content)
        elif f.kind == "dir" and not os.path.lexists(f.host):
            planner.folder(f.path)  # the folder of a generated file, absent from the root
        else:
            planner.add(f.path, f.host, keep_dir_mode=True)
    for path, mode in SKELETON:
        planner.folder(path, mode)
    return planner.plan(what)


def plan_store_paths(what: str, sources: Sequence[Path]) -> LayerPlan:
    """Every entry of each store path in ``sources`` at ``/venvseal/store/<name>``."""
    planner = _Planner()
    for source in sources:
        top = STORE_DIR / source.name
        if not source.is_dir() or source.is_symlink():
            planner.add(top, source, keep_dir_mode=False)
            continue
        planner.folder(top)
        for rel, host, empty in _tree(source):
            if empty:
                planner.folder(top / rel)
            else:
                planner.add(top / rel, host, keep_dir_mode=False)
    return planner.plan(what)


# Writing ---------------------------------------------------------------------------------


class Hashing:
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.sha.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self.sha.hexdigest())


def tar_header(name: str, kind: EntryKind, mode: int, *, size: int = 0,
               target: str = "") -> tarfile.TarInfo:
    """A canonical tar header: root's, without names, at :data:`MTIME`."""
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE}[kind]
    info.mode, info.size, info.linkname, info.mtime = mode, size, target, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def open_tar(stream: Hashing) -> tarfile.TarFile:
    """A tar writer on ``stream``."""
    # PAX: long and non-ASCII names get an extended header, whose own fields are fixed.
    return tarfile.TarFile(fileobj=cast(IO[bytes], stream), mode="w",
                           format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFFER)


class Stopped(ImageError):
    """Another layer failed, or the user interrupted: this one stops early."""


def write_layer(plan: LayerPlan, dest: Path, *, compression: Compression, pool: Executor,
                workers: int, stop: threading.Event | None = None) -> Layer:
    """Write ``plan`` as a compressed tar at ``dest``, hashing both forms on the way; raise
    :class:`Stopped` at the next entry once ``stop`` is set."""
    with dest.open("wb") as raw:
        packed = Hashing(raw)
        compressor = open_compressor(compression, packed, pool=pool, workers=workers)
        plain = Hashing(compressor)
        with open_tar(plain) as tar:
            for entry in plan.entries:
                if stop is not None and stop.is_set():
                    raise Stopped(f"writing the {plan.what} layer stopped")
                _write_entry(tar, entry)
        compressor.close()
    return Layer(plan.what, packed.digest, packed.size, plain.digest, len(plan.entries),
                 compression.media_type)


def _write_entry(tar: tarfile.TarFile, e: Entry) -> None:
    target = e.target.lstrip("/") if e.kind == "hardlink" else e.target
    info = tar_header(str(e.path).lstrip("/"), e.kind, e.mode, size=e.size, target=target)
    if e.kind != "file":
        tar.addfile(info)
    elif e.content is not None:
        tar.addfile(info, io.BytesIO(e.content))
    else:
        assert e.host is not None
        try:
            with e.host.open("rb") as f:
                tar.addfile(info, f)
        except OSError as err:
            raise ImageError(f"cannot read {e.host} for {e.path} ({err}); did it change "
                             "while the image was written? run again") from err
