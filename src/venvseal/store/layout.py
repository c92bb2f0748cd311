"""The store's folders on disk: names, metadata, lock files, and crash debris.

Layout (all on one file system, so renames are atomic)::

    <root>/<32 nix32>-<name>       store paths (file, symlink or directory), read-only
    <root>/.meta/<basename>.json   what the store knows of a path: narHash, narSize, ...
    <root>/.tmp/                   build dirs and temp files, named <basename>~<pid>~<random>;
                                   a build dir holds the output and a link per reference
    <root>/.locks/<basename>.lock  one flock(2) file per path; .gc.lock for the collector
    <root>/.roots/                 gc roots: symlinks to out-links
    <root>/.outputs/<key>          which path a set of inputs produced

A path is valid when its entry AND its meta exist. A crash leaves at worst one without the
other, temp files, or a published folder whose top is still writable: debris, cleaned by
whoever next opens the store (or runs gc) and takes the path's lock without waiting.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NewType

from venvseal import fsutil
from venvseal.errors import StoreError
from venvseal.hashes import NIX32_ALPHABET, Sha256, compress_hash, nix32_encode, parse_sha256
from venvseal.store.errors import StoreAccessError, StoreNameError

StorePath = NewType("StorePath", Path)

# Nix sets every time in a store path to 1 s after the epoch (0 means "unknown" to some tools).
CANONICAL_MTIME = 1
# Where store paths live at run time (in the sandbox, an image, or a host that mounts the
# store there), whatever folder holds them on this host: like Nix's /nix/store, so outputs
# that embed their own path are the same in every store, and can be shared between stores.
STORE_DIR = PurePosixPath("/venvseal/store")
TMP, LOCKS, META, ROOTS, OUTPUTS = ".tmp", ".locks", ".meta", ".roots", ".outputs"
SCRATCH = "scratch"  # prefix of scratch dirs in .tmp; never a valid basename
GC_LOCK = ".gc"  # a basename never starts with '.', so this cannot clash
_NAME = r"(?!\.)[A-Za-z0-9+._?=-]{1,211}"  # Nix's store path name rule and length limit
_NAME_RE = re.compile(_NAME)
HASH_CHARS = 32  # 160 bits in nix32, as in Nix store paths
BASENAME_RE = re.compile(rf"[{NIX32_ALPHABET}]{{{HASH_CHARS}}}-{_NAME}")
# A read-only store can still be read while its owner writes it: a lock file we may not
# create is one nobody holds (its holder would have created it).
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass(frozen=True, slots=True)
class PathInfo:
    """What the store records about a valid path.

    ``build_inputs`` are paths its build read but it does not refer to (the deps path, the
    toolchain root, wheels): gc keeps them for a rooted path so it can be rebuilt quickly.
    """

    path: StorePath
    nar_hash: Sha256
    nar_size: int
    references: tuple[StorePath, ...]
    inputs: dict[str, object] | None = field(default=None, hash=False)
    build_inputs: tuple[StorePath, ...] = field(default=(), compare=False)


def default_store_root(env: Mapping[str, str], home: Path) -> Path:
    """``$VENVSEAL_STORE``, else ``$XDG_DATA_HOME/venvseal/store``, else under ``home``."""
    if explicit := env.get("VENVSEAL_STORE"):
        return Path(explicit)
    data = env.get("XDG_DATA_HOME", "")
    # XDG Base Directory spec: a relative $XDG_DATA_HOME is invalid and must be ignored.
    base = Path(data) if os.path.isabs(data) else home / ".local" / "share"
    return base / "venvseal" / "store"


def path_digest(fingerprint: str) -> str:
    """The 32 nix32 characters naming a path: sha256 folded to 160 bits, as Nix does."""
    return nix32_encode(compress_hash(hashlib.sha256(fingerprint.encode()).digest(), 20))


def name_of(path: StorePath) -> str:
    """The name part of ``path`` (what follows the hash and the dash)."""
    return path.name[HASH_CHARS + 1 :]


def check_name(name: str) -> str:
    """``name`` if it is a valid store path name, else :class:`StoreNameError`."""
    if not _NAME_RE.fullmatch(name):
        raise StoreNameError(name)
    return name


class Layout:
    """The folders of one store root: where each file of a path lives, and its lock.

    ``writable=False`` opens an existing store for reading only (``verify``, ``gc
    --dry-run`` on a read-only mount or another user's store). When root writes into a
    store another user owns, every file it creates is given to that user, so no lock file,
    meta or path ever locks the owner out.
    """

    def __init__(self, root: Path, *, writable: bool = True) -> None:
        self.writable = writable
        self.root = open_root(root) if writable else _existing_root(root)
        st = os.stat(self.root)
        foreign = os.geteuid() == 0 and st.st_uid != 0
        self.owner: tuple[int, int] | None = (st.st_uid, st.st_gid) if foreign else None
        if self.owner is not None and writable:  # folders root just made for the owner
            for sub in (TMP, LOCKS, META, ROOTS, OUTPUTS):
                if os.lstat(self.root / sub).st_uid != self.owner[0]:
                    self.give(self.root / sub)

    def as_store_path(self, path: Path) -> StorePath | None:
        if path.parent == self.root and BASENAME_RE.fullmatch(path.name):
            return StorePath(path)
        return None

    def meta_file(self, basename: str) -> Path:
        return self.root / META / f"{basename}.json"

    def lock_file(self, basename: str) -> Path:
        return self.root / LOCKS / f"{basename}.lock"

    def is_valid(self, path: StorePath) -> bool:
        """True when ``path`` is complete (its entry and its meta exist)."""
        return os.path.lexists(path) and self.meta_file(path.name).exists()

    def valid_names(self) -> list[str]:
        """The basenames of every valid path, sorted."""
        return sorted(name for name in os.listdir(self.root)
                      if BASENAME_RE.fullmatch(name) and self.meta_file(name).exists())

    # Ownership ---------------------------------------------------------------------------

    def give(self, path: Path) -> None:
        """Hand ``path`` (not following a symlink) to the store's owner, if that is not us."""
        if self.owner is not None:
            os.lchown(path, *self.owner)

    def give_tree(self, top: Path) -> None:
        """Hand every entry under ``top`` to the store's owner, if that is not us."""
        if self.owner is None:
            return
        pending = [os.fspath(top)]
        while pending:
            path = pending.pop()
            os.lchown(path, *self.owner)
            if stat.S_ISDIR(os.lstat(path).st_mode):
                with os.scandir(path) as it:
                    pending.extend(entry.path for entry in it)

    # Locks -------------------------------------------------------------------------------

    def lock(self, name: str, *, shared: bool, wait: bool) -> int | None:
        """flock the lock file ``name`` (a path's basename, or a dotted name); the fd holding
        it, or None if it is taken and ``wait`` is False.

        Lock files are opened read-only (flock needs no write access) and given to the
        store's owner, so whoever made one, the owner can lock it. On a store we may not
        write, a lock file that does not exist is held by nobody: a dummy fd stands for it.
        """
        file = self.root / LOCKS / f"{name}.lock"
        if not file.exists():
            try:
                fd = os.open(file, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                if err.errno in _READ_ONLY and not self.writable:
                    return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                raise
            try:
                self.give(file)
            finally:
                os.close(fd)
        if wait:
            return fsutil.lock_file(file, shared=shared)
        return fsutil.try_lock_file(file, shared=shared)

    def unlink_lock(self, name: str, fd: int) -> None:
        """Delete the lock file ``name`` whose lock ``fd`` holds (exclusively), then close."""
        if self.writable:
            fsutil.unlink_locked(self.root / LOCKS / f"{name}.lock", fd)
        else:
            os.close(fd)

    # Metadata ------------------------------------------------------------------------------

    def write_meta(self, info: PathInfo, *, temp: Path) -> Path:
        """Record ``info`` (atomically, durably, via ``temp``); the meta file."""
        record = {
            "narHash": info.nar_hash.sri,
            "narSize": info.nar_size,
            "references": [ref.name for ref in info.references],
            "inputs": info.inputs,
        }
        if info.build_inputs:
            record["buildInputs"] = [p.name for p in info.build_inputs]
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        meta = self.meta_file(info.path.name)
        fsutil.write_atomic(meta, data, temp=temp)
        self.give(meta)
        return meta

    def read_meta(self, path: StorePath) -> PathInfo | None:
        """``path``'s recorded info; None without meta; StoreError if the meta is damaged."""
        file = self.meta_file(path.name)
        try:
            record = json.loads(file.read_bytes())
            inputs, names = record["inputs"], record["references"]
            builds = record.get("buildInputs", [])
            if inputs is not None and not isinstance(inputs, dict):
                raise TypeError("inputs is not an object")
            for what in (names, builds):
                if not all(isinstance(n, str) and BASENAME_RE.fullmatch(n) for n in what):
                    raise ValueError(f"references {what!r} are not store path names")
            return PathInfo(
                path=path,
                nar_hash=parse_sha256(record["narHash"], str(file)),
                nar_size=int(record["narSize"]),
                references=tuple(StorePath(self.root / name) for name in names),
                inputs=inputs,
                build_inputs=tuple(StorePath(self.root / name) for name in builds),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"store metadata {file} is damaged ({err}); delete it and "
                             f"{path} (chmod -R u+w first) so the path is rebuilt") from err

    # The outputs index -------------------------------------------------------------------

    def record_output(self, key: str, path: StorePath) -> None:
        """Remember that the inputs summed up by ``key`` produced ``path``."""
        file = self.root / OUTPUTS / check_key(key)
        fsutil.write_atomic(file, path.name.encode(), temp=file.with_name(f".{key}.tmp"))
        self.give(file)

    def lookup_output(self, key: str) -> StorePath | None:
        """The valid path recorded for ``key`` by :meth:`record_output`, if any."""
        try:
            name = (self.root / OUTPUTS / check_key(key)).read_text().strip()
        except FileNotFoundError:
            return None
        path = self.as_store_path(self.root / name)
        return path if path is not None and self.is_valid(path) else None


def check_key(key: str) -> str:
    """``key`` if it names an outputs index entry or a store-wide lock."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", key):
        raise ValueError(f"not an outputs key: {key!r}")
    return key


def seal_top(path: Path) -> None:
    """Make the top folder of the store path ``path`` read-only, with the canonical time."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        os.chmod(path, fsutil.SEALED_DIR)
        os.utime(path, ns=(CANONICAL_MTIME * 10**9,) * 2, follow_symlinks=False)


def top_unsealed(path: Path) -> bool:
    """True for a path whose top folder is writable (a crash between rename and seal)."""
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != fsutil.SEALED_DIR


def open_root(root: Path) -> Path:
    """Create the store's folders under ``root`` if missing; its resolved path."""
    root = Path(os.path.abspath(root))
    try:
        if root.exists() and not root.is_dir():
            raise StoreAccessError(root, "is not a directory")
        for sub in ("", TMP, LOCKS, META, ROOTS, OUTPUTS):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # mkdir succeeds on folders that exist, even read-only ones, and os.access trusts mode
        # bits that root bypasses: creating a file is the real test, os.access the cheap one.
        probe = root / LOCKS / fsutil.temp_name(".probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        probe.unlink()
        for sub in (TMP, META, ROOTS):
            if not os.access(root / sub, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root / sub))
    except OSError as err:
        raise StoreAccessError(root, f"is not writable ({err.strerror}: {err.filename})") from err
    return root.resolve()


def _existing_root(root: Path) -> Path:
    """``root`` resolved, if it holds a store (opened for reading: nothing is created)."""
    root = Path(os.path.abspath(root))
    missing = [sub for sub in (META, LOCKS, ROOTS) if not (root / sub).is_dir()]
    if missing:
        raise StoreError(f"{root} holds no venvseal store (no {missing[0]} folder); pass "
                         "--store DIR or set VENVSEAL_STORE to the store you mean")
    return root.resolve()

