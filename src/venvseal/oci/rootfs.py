"""Entries of a toolchain root, recorded as reached from its ``/``, with why each is needed.

:class:`RootCollector` is the runtime closure's only reader of the root. It resolves paths one
component at a time, as the kernel would with the root as ``/``, and records every symlink met
so the image resolves the same way. It never records what others may not read on the host
(``/etc/shadow``, ``/etc/ssl/private``): a closure that asks for such a file is refused,
naming it (issue 13: an image is published; what the host keeps private stays private).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from venvseal.errors import EXIT_USAGE, VenvsealError
from venvseal.toolchain.resolve import MAX_LINKS

Kind = Literal["file", "dir", "symlink"]
Skip = Callable[[PurePosixPath, bool], bool]  # (path relative to the tree, is a folder)
PARENT = "parent"
ROOT = PurePosixPath("/")
# Provided by the container runtime, never by the root: a symlink into them (/etc/mtab ->
# ../proc/self/mounts) is kept, and not followed into the host's own /proc.
VIRTUAL = ("dev", "proc", "run", "sys", "tmp")


class ClosureError(VenvsealError):
    """The runtime closure cannot be computed from this toolchain root."""


class ImageConfigError(ClosureError):
    """``[image]`` names something the toolchain root does not have (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(eq=False)
class PrivateFileError(ClosureError):
    """A file the closure needs is not readable by others on the host: never in an image."""

    path: PurePosixPath
    root: Path
    mode: int
    why: str

    template = ("{path} in the toolchain root {root} (mode {mode:04o}, needed as: {why}) is not "
                "readable by others, so it is never put into an image: remove it from [image] "
                "include, or leave out what leads to it")


@dataclass(frozen=True, slots=True)
class RuntimeFile:
    """One entry of the image's file system, taken from the toolchain root.

    ``content`` is set only for a file venvseal writes itself (a default /etc/passwd when
    the root has none; mode 0644); ``host`` does not exist then. :meth:`read_bytes` covers
    both. Modes and symlink targets are read from ``host``.
    """

    path: PurePosixPath  # absolute, inside the image and the root
    host: Path  # where to read it on the host (inside the toolchain root folder)
    kind: Kind
    size: int  # bytes for files, 0 otherwise
    why: str
    content: bytes | None = None

    def read_bytes(self) -> bytes:
        """The file's bytes (kind "file" only)."""
        return self.content if self.content is not None else self.host.read_bytes()


@dataclass(frozen=True, slots=True)
class RuntimeClosure:
    """Every entry, sorted by path (parents first), each parent folder present, no duplicates.

    ``notes`` says what was seen but left out, and why (a symlink of a store path that leads
    outside the toolchain's trees, a private file of a package, a library no one has).
    """

    files: tuple[RuntimeFile, ...]
    notes: tuple[str, ...] = ()
    # The toolchain.path folders the image has, for its PATH; None: not computed (all).
    path: tuple[PurePosixPath, ...] | None = None

    @property
    def size(self) -> int:
        """Total bytes of the regular files."""
        return sum(f.size for f in self.files)


class RootCollector:
    """Records entries of a root file system, as reached from its ``/``, with their reasons.

    A first reason sticks, except that "parent" gives way to a real one.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_text = str(root).rstrip("/")  # "" for "/": host paths are then the path
        self.entries: dict[PurePosixPath, RuntimeFile] = {}
        self._walked: set[PurePosixPath] = set()

    def host(self, path: PurePosixPath) -> Path:
        """Where ``path`` (inside the root) is on the host, no symlink followed."""
        return self.root / str(path).lstrip("/")

    def _host_text(self, path: PurePosixPath) -> str:
        """:meth:`host` as a string, without pathlib's cost (resolve runs it thousands of
        times for a closure); ``path`` is absolute and not the root itself."""
        return self._root_text + str(path)

    def record(self, path: PurePosixPath, why: str, content: bytes | None = None) -> None:
        """Add one entry (and its parent folders) unless it is there for a better reason."""
        old = self.entries.get(path)
        if old is not None and content is None and (old.why != PARENT or why == PARENT):
            return
        host = self.host(path)
        if content is not None:
            entry = RuntimeFile(path, host, "file", len(content), why, content)
        else:
            entry = RuntimeFile(path, host, *self._kind(path, why), why)
        self.entries[path] = entry
        if path.parent != ROOT and path.parent not in self.entries:
            self.record(path.parent, PARENT)

    def _kind(self, path: PurePosixPath, why: str) -> tuple[Kind, int]:
        try:
            st = os.lstat(self.host(path))
        except FileNotFoundError:
            if why == PARENT:  # the folder of a generated file, absent from the root
                return "dir", 0
            raise
        if stat.S_ISLNK(st.st_mode):
            return "symlink", 0
        if not st.st_mode & stat.S_IROTH:
            raise PrivateFileError(path, self.root, stat.S_IMODE(st.st_mode), why)
        if stat.S_ISDIR(st.st_mode):
            return "dir", 0
        if stat.S_ISREG(st.st_mode):
            return "file", st.st_size
        raise ClosureError(f"{path} in the toolchain root {self.root} is a device, socket or "
                           "pipe, which an image cannot hold; leave it out of [image] include")

    def add_path(self, path: PurePosixPath, why: str) -> PurePosixPath | None:
        """Record ``path`` and every symlink on the way; its symlink-free path, or None.

        None means the chain ends at nothing (a dangling symlink, whose links are still
        recorded). A folder is recorded alone, not its content (see :meth:`add_tree`).
        """
        real = self.resolve(path, record=why)
        if real is not None and real != ROOT:
            self.record(real, why)
        return real

    def resolve(self, path: PurePosixPath, *, record: str | None = None) -> PurePosixPath | None:
        """The symlink-free path ``path`` leads to in the root, or None if it leads nowhere;
        each symlink met is recorded with reason ``record`` unless that is None."""
        todo, current, hops, via = list(path.parts[1:]), ROOT, 0, None
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if current == ROOT:
                    raise ClosureError(f"{via or path} in the toolchain root {self.root} leads "
                                       "outside the root ('..' above /); an image cannot hold "
                                       "it: fix the symlink in the root, or leave it out")
                current = current.parent
                continue
            here = current / name
            if current == ROOT and name in VIRTUAL:
                return None
            host = self._host_text(here)
            try:  # one lstat: does it exist, is it a symlink
                mode = os.lstat(host).st_mode
            except (OSError, ValueError):  # os.path.lexists says False for all of these
                return None
            if not stat.S_ISLNK(mode):
                current = here
                continue
            if record is not None:
                self.record(here, record)
            hops += 1
            target = PurePosixPath(os.readlink(host))
            if hops > MAX_LINKS:
                raise ClosureError(f"{path} in the toolchain root {self.root}: too many "
                                   "levels of symlinks")
            via = f"symlink {here} -> {target}"
            todo = list(target.parts[1:] if target.is_absolute() else target.parts) + todo
            current = ROOT if target.is_absolute() else current
        return current

    def add_tree(self, path: PurePosixPath, why: str, skip: Skip | None = None) -> bool:
        """Record ``path`` and, if it is a folder, everything in it; False if it is absent.

        A symlink inside keeps being a symlink, and what it points to elsewhere in the root
        is recorded too (a folder whole).
        """
        real = self.add_path(path, why)
        if real is None:
            return False
        if real == ROOT and path != ROOT:
            return True  # a symlink to / inside a folder: not a reason to take everything
        if real == ROOT or self.entries[real].kind == "dir":
            self._walk(real, real, why, skip)
        return True

    def _walk(self, folder: PurePosixPath, top: PurePosixPath, why: str,
              skip: Skip | None) -> None:
        if folder in self._walked:
            return
        self._walked.add(folder)
        with os.scandir(self.host(folder)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = folder / entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if skip is not None and skip(path.relative_to(top), is_dir):
                continue
            if entry.is_symlink():
                self.add_tree(path, why, skip)
            elif is_dir:
                self.record(path, why)
                self._walk(path, top, why, skip)
            else:
                self.record(path, why)

    def kind_of(self, path: PurePosixPath) -> Kind | None:
        """The kind of a recorded entry, or None."""
        entry = self.entries.get(path)
        return None if entry is None else entry.kind

    def result(self, notes: tuple[str, ...] = (),
               path: tuple[PurePosixPath, ...] | None = None) -> RuntimeClosure:
        """The entries so far, sorted by path components (so parents come first)."""
        return RuntimeClosure(tuple(sorted(self.entries.values(), key=lambda f: f.path.parts)),
                              notes, path)
