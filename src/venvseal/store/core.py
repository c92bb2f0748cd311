"""The content-addressed store: sealed, hashed, locked paths under one root folder.

Layout (all on one file system, so renames are atomic)::

    <root>/<32 nix32>-<name>       store paths (file, symlink or directory), read-only
    <root>/.meta/<basename>.json   what the store knows of a path: narHash, narSize, ...
    <root>/.tmp/                   build dirs and temp files, named <basename>~<pid>~<random>;
                                   a build dir holds the output and a link per reference
    <root>/.locks/<basename>.lock  one flock(2) file per path; .gc.lock for the collector
    <root>/.roots/                 gc roots: symlinks to out-links

A path is valid when its entry AND its meta exist. :meth:`Store.add`, the one writer of
paths, writes the meta and then renames the sealed tree into place; :meth:`Store.gc` deletes
the meta first. A crash therefore leaves at worst one without the other: debris, removed on
the next open, add or gc by whoever takes the path's lock without waiting.

Locks: a builder holds a path's lock exclusively. A :class:`Store` holds a shared lock on
every path :meth:`Store.add` returned (and on their references) until it is closed, as Nix's
temporary roots do, so a concurrent ``gc`` never deletes a path a running build uses.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import NewType, Protocol

from venvseal import fsutil
from venvseal.errors import EXIT_USAGE, StoreCorruptError, StoreError, UsageError, VenvsealError
from venvseal.hashes import NIX32_ALPHABET, Sha256, compress_hash, nix32_encode, parse_sha256
from venvseal.store.nar import NarResult, nar_hash

StorePath = NewType("StorePath", Path)

# Nix sets every time in a store path to 1 s after the epoch (0 means "unknown" to some tools).
CANONICAL_MTIME = 1
_TMP, _LOCKS, _META, _ROOTS = ".tmp", ".locks", ".meta", ".roots"
# Where store paths live at run time (in the sandbox, an image, or a host that mounts the
# store there), whatever folder holds them on this host: like Nix's /nix/store, so outputs
# that embed their own path are the same in every store, and can be shared between stores.
STORE_DIR = PurePosixPath("/venvseal/store")
_OUTPUTS = ".outputs"  # which store path a set of inputs produced (see record_output)
_SCRATCH = "scratch"  # prefix of scratch dirs in .tmp; never a valid basename
_GC_LOCK = ".gc"  # a basename never starts with '.', so this cannot clash
_NAME = r"(?!\.)[A-Za-z0-9+._?=-]{1,211}"  # Nix's store path name rule and length limit
_NAME_RE = re.compile(_NAME)
_HASH_CHARS = 32  # 160 bits in nix32, as in Nix store paths
_BASENAME_RE = re.compile(rf"[{NIX32_ALPHABET}]{{{_HASH_CHARS}}}-{_NAME}")
# add() rebuilds a path a concurrent gc deleted before it could be pinned; never in practice.
_ADD_ATTEMPTS = 3

OnWait = Callable[["StorePath"], None]


class StoreAccessError(StoreError):
    """The store's root folder cannot be created or written (a usage error: exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, root: Path, reason: str) -> None:
        self.root = root
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"store at {self.root} {self.reason}; pass --store DIR or set VENVSEAL_STORE "
                "to a folder you can write")


class StoreFullError(StoreError):
    """The file system holding the store ran out of space during a build."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"the store at {self.root} is full while building {self.name}; "
                "free space (venvseal gc) or pass --store DIR")


class HashMismatchError(StoreError):
    """A fixed-output path's content does not have the hash declared for it."""

    def __init__(self, path: Path, expected: Sha256, got: Sha256) -> None:
        self.path = path
        self.expected = expected
        self.got = got
        super().__init__(str(self))

    def __str__(self) -> str:
        # Worded as Nix words it, so users and tools that know Nix's message recognise it.
        return (f"hash mismatch in fixed-output path '{self.path}':\n"
                f"  specified: {self.expected.sri}\n"
                f"  got:       {self.got.sri}\n"
                f"if the new content is expected, declare {self.got.sri} instead; "
                "otherwise find out which input changed")


class UndeclaredHashError(VenvsealError):
    """A fixed output has no declared hash; it was built and its hash is known now.

    ``hint`` is the next step after declaring the hash by hand (the deps stage can also
    write it with ``--update-hash``); nothing was added to the store.
    """

    def __init__(self, recipe_file: Path, key: str, got: Sha256, *,
                 hint: str = "or rerun with --update-hash to write it into the recipe") -> None:
        self.recipe_file = recipe_file
        self.key = key
        self.got = got
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        hint = f"\n{self.hint}" if self.hint else ""
        return (f"{self.recipe_file}: {self.key} is not declared; declare it as\n"
                f'  hash = "{self.got.sri}"{hint}')


class StoreNameError(UsageError):
    """A store path name breaks Nix's naming rule."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"{self.name!r} is not a valid store path name: use 1 to 211 letters, digits "
                "and '+-._?=', not starting with '.'")


@dataclass(frozen=True, slots=True)
class PathInfo:
    """What the store records about a valid path."""

    path: StorePath
    nar_hash: Sha256
    nar_size: int
    references: tuple[StorePath, ...]
    inputs: dict[str, object] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """One path re-hashed: ``ok`` when the content still has the recorded hash."""

    path: StorePath
    ok: bool
    expected: Sha256
    got: Sha256
    changed_files: tuple[str, ...] = ()  # edited entries, by their time stamp and mode


@dataclass(frozen=True, slots=True)
class GcResult:
    """What a collection deleted (or would delete, for a dry run)."""

    deleted: tuple[StorePath, ...]
    freed_bytes: int  # disk usage (st_blocks * 512, hard links once) of the deleted paths


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
    return path.name[_HASH_CHARS + 1 :]


def check_name(name: str) -> str:
    """``name`` if it is a valid store path name, else :class:`StoreNameError`."""
    if not _NAME_RE.fullmatch(name):
        raise StoreNameError(name)
    return name


class Substituter(Protocol):
    """Somewhere a missing path can be fetched from instead of built (see venvseal.cache)."""

    def fetch(self, store: Store, path: StorePath, expected: Sha256 | None) -> PathInfo | None:
        """Make ``path`` valid in ``store`` (through ``store.add(..., substitute=False)``)
        and return its info; None, with ``store`` unchanged, when it cannot."""
        ...


class Store:
    """A store rooted at one folder; created (and cleared of crash debris) when opened.

    ``substituters`` are asked, in order, for a path that is not valid before it is built
    (see :meth:`add` and :meth:`substitute`); ``substituted`` lists the paths they gave.
    """

    def __init__(self, root: Path, substituters: Sequence[Substituter] = ()) -> None:
        self.root = _open_layout(root)
        self.substituters: list[Substituter] = list(substituters)
        self.substituted: list[StorePath] = []
        self._pins: dict[StorePath, int] = {}
        self._clean_debris()

    @classmethod
    def open(cls, root: Path) -> Store:
        """Open (creating if needed) the store at ``root``."""
        return cls(root)

    def close(self) -> None:
        """Release this store's shared locks: a later gc may collect unrooted paths again."""
        for fd in self._pins.values():
            os.close(fd)
        self._pins.clear()

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
        """The fixed-output path for content whose NAR hash is ``nar_hash``.

        Only the hash and the name count, so the path is known before the content is built.
        """
        fingerprint = f"fixed:out:r:sha256:{nar_hash.base16}:{check_name(name)}"
        return StorePath(self.root / f"{path_digest(fingerprint)}-{name}")

    @staticmethod
    def logical(path: StorePath) -> PurePosixPath:
        """Where ``path`` is at run time (see STORE_DIR)."""
        return STORE_DIR / path.name

    def parse_path(self, text: str) -> StorePath:
        """The store path ``text`` names (directly, or through a symlink such as an out-link)."""
        path = self._as_store_path(Path(os.path.abspath(text)))
        path = path or self._as_store_path(Path(text).resolve())
        if path is None:
            raise UsageError(f"{text} is not a path in the store at {self.root}; pass "
                             f"{self.root}/<hash>-<name> or an out-link to one")
        return path

    def _as_store_path(self, path: Path) -> StorePath | None:
        if path.parent == self.root and _BASENAME_RE.fullmatch(path.name):
            return StorePath(path)
        return None

    # Queries ---------------------------------------------------------------------------

    def is_valid(self, path: StorePath) -> bool:
        """True when ``path`` is complete in this store (its entry and its meta exist)."""
        return os.path.lexists(path) and self._meta_file(path.name).exists()

    def query(self, path: StorePath) -> PathInfo | None:
        """What the store knows of ``path``, or None if it is not valid."""
        return self._read_meta(path) if os.path.lexists(path) else None

    def paths(self) -> list[StorePath]:
        """Every valid path, sorted."""
        return sorted(StorePath(self.root / name) for name in os.listdir(self.root)
                      if _BASENAME_RE.fullmatch(name) and self._meta_file(name).exists())

    def verify(self, paths: Sequence[StorePath] | None = None,
               progress: Callable[[int], None] | None = None) -> list[VerifyResult]:
        """Re-hash ``paths`` (every valid path when None) and compare with the recorded hash."""
        results = []
        for path in self.paths() if paths is None else paths:
            info = self.query(path)
            if info is None:
                raise StoreError(f"{path} is not a valid path in the store at {self.root}; "
                                 "build it first")
            got = nar_hash(path, progress=progress).hash
            ok = got == info.nar_hash
            changed = () if ok else tuple(fsutil.unsealed(path, mtime=CANONICAL_MTIME))
            results.append(VerifyResult(path, ok, info.nar_hash, got, changed))
        return results

    def check_intact(self, path: StorePath, *, within: str | None = None) -> None:
        """Refuse to use ``path`` (or its folder ``within``) if any of its entries was edited
        after it was sealed.

        A stat of every entry, no hashing: cheap enough for every reuse. ``verify`` re-hashes.
        """
        top = path / within if within is not None else path
        if not top.is_dir():
            return
        prefix = f"{within}/" if within is not None else ""
        changed = [prefix + c for c in fsutil.unsealed(top, mtime=CANONICAL_MTIME)]
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            raise StoreCorruptError(str(path), "", "", f"{changed[0]}{more}")

    def remove(self, path: StorePath) -> None:
        """Delete ``path`` (for ``venvseal repair``), under its lock; roots are kept."""
        fd = self._lock(path, shared=False, on_wait=None)
        try:
            self._meta_file(path.name).unlink(missing_ok=True)
            fsutil.remove_tree(path)
        finally:
            os.close(fd)

    # The one write path -----------------------------------------------------------------

    def add(self, path: StorePath, produce: Callable[[Path], None], *,
            expected: Sha256 | None = None, references: Sequence[StorePath] = (),
            inputs: Mapping[str, object] | None = None,
            progress: Callable[[int], None] | None = None,
            hashed: NarResult | None = None,
            on_wait: OnWait | None = None, substitute: bool = True) -> PathInfo:
        """Return ``path``'s info, building it first with ``produce`` if it is not valid.

        ``produce(out)`` must create ``out`` (a file or a directory) in a private temp dir;
        the result is sealed read-only, NAR-hashed (``progress`` gets bytes hashed) and
        renamed into place. With ``expected``, a different hash raises
        :class:`HashMismatchError` and adds nothing. ``references`` must be valid (or
        ``path`` itself). ``on_wait(path)`` is called before waiting for another process's
        lock. ``hashed`` is the caller's NAR hash of the exact tree ``produce`` renames
        into place (it is then not hashed again). Reuse costs no hashing: if ``path`` is
        valid, ``produce`` is not called. Nor is it when a substituter provides ``path``
        (unless ``substitute`` is False: how substituters themselves add what they fetched).
        """
        self.parse_path(str(path))
        record = _json_inputs(inputs)
        refs = self._pin_references(path, references, on_wait)
        for _ in range(_ADD_ATTEMPTS):
            info = self._pin_valid(path, on_wait)
            if info is None:
                if substitute and self._substitute(path, expected):
                    continue
                build = _Build(expected, refs, record, progress, hashed)
                self._build_locked(path, produce, build, on_wait)
                continue
            if expected is not None and info.nar_hash != expected:
                raise HashMismatchError(path, expected, info.nar_hash)
            return info
        raise StoreError(f"{path} was deleted by a concurrent 'venvseal gc' each time it was "
                         "built; run the build again")

    def substitute(self, path: StorePath, expected: Sha256 | None = None) -> PathInfo | None:
        """``path``'s info if it is valid, or made valid by a substituter; else None.

        For callers that want a path fetched before they commit to building it: a fixed
        output built in scratch space (its final path is known only after the build), or a
        path whose build needs inputs not realised yet (the relinked deps and the closure
        need the deps path, which a cache hit never fetches).
        """
        info = self._pin_valid(path, None)
        if info is None and self._substitute(path, expected):
            info = self._pin_valid(path, None)
        if info is not None and expected is not None and info.nar_hash != expected:
            raise HashMismatchError(path, expected, info.nar_hash)
        return info

    def _substitute(self, path: StorePath, expected: Sha256 | None) -> bool:
        """Ask each substituter for ``path`` in turn; True once one has added it."""
        for substituter in self.substituters:
            if substituter.fetch(self, path, expected) is not None:
                self.substituted.append(path)
                return True
        return False

    def _build_locked(self, path: StorePath, produce: Callable[[Path], None],
                      build: _Build, on_wait: OnWait | None) -> None:
        """Build ``path`` under its exclusive lock, unless another process just did."""
        fd = self._lock(path, shared=False, on_wait=on_wait)
        try:
            if not self.is_valid(path):
                self._remove_debris(path.name)
                self._build(path, produce, build)
        finally:
            os.close(fd)

    def _build(self, path: StorePath, produce: Callable[[Path], None], build: _Build) -> None:
        """Run ``produce`` in a fresh temp dir and publish its output; on error leave nothing."""
        work = self.root / _TMP / fsutil.temp_name(path.name)
        try:
            os.mkdir(work, 0o700)
            # The output is built at work/<basename>, one level below the store root like
            # its final place. A link per reference beside it makes a relative symlink from
            # the output into a reference (../<ref>/...) resolve during the build as well.
            for ref in build.references:
                if ref != path:
                    os.symlink(f"../../{ref.name}", work / ref.name)
            produce(work / path.name)
            self._publish(path, work, build)
        except OSError as err:
            if fsutil.is_disk_full(err):
                raise StoreFullError(self.root, name_of(path)) from err
            raise
        finally:
            fsutil.remove_tree(work)

    def _publish(self, path: StorePath, work: Path, build: _Build) -> None:
        """Seal, hash and record ``work/<basename>``, then rename it to ``path``."""
        out = work / path.name
        if not os.path.lexists(out):
            raise StoreError(f"building {name_of(path)} created nothing at {out}; the build "
                             "step must create its output")
        fsutil.seal_tree(out, mtime=CANONICAL_MTIME)
        # rename(2) moves a folder into another parent only if the folder itself is writable
        # (its '..' entry changes), a check only root bypasses: the top folder stays
        # writable until it is in place (_seal_top), and debris cleaning seals one a crash
        # left open in between.
        if _is_dir(out):
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
        meta = self._write_meta(path, nar.hash, nar.size, build, temp=work / "meta.json")
        try:
            os.rename(out, path)
        except BaseException:
            meta.unlink(missing_ok=True)
            raise
        _seal_top(path)
        fsutil.fsync_dir(self.root)

    def _write_meta(self, path: StorePath, nar: Sha256, size: int, build: _Build, *,
                    temp: Path) -> Path:
        """Record ``path``'s meta (atomically, durably, via ``temp``); the meta file."""
        record = {
            "narHash": nar.sri,
            "narSize": size,
            "references": [ref.name for ref in build.references],
            "inputs": build.inputs,
        }
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        meta = self._meta_file(path.name)
        fsutil.write_atomic(meta, data, temp=temp)
        return meta

    def _read_meta(self, path: StorePath) -> PathInfo | None:
        """``path``'s recorded info; None without meta; StoreError if the meta is damaged."""
        file = self._meta_file(path.name)
        try:
            record = json.loads(file.read_bytes())
            inputs, names = record["inputs"], record["references"]
            if inputs is not None and not isinstance(inputs, dict):
                raise TypeError("inputs is not an object")
            if not all(isinstance(n, str) and _BASENAME_RE.fullmatch(n) for n in names):
                raise ValueError(f"references {names!r} are not store path names")
            return PathInfo(
                path=path,
                nar_hash=parse_sha256(record["narHash"], str(file)),
                nar_size=int(record["narSize"]),
                references=tuple(StorePath(self.root / name) for name in names),
                inputs=inputs,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"store metadata {file} is damaged ({err}); delete it and "
                             f"{path} (chmod -R u+w first) so the path is rebuilt") from err

    # Pins (shared locks held until close) ------------------------------------------------

    def _pin_references(self, path: StorePath, references: Iterable[StorePath],
                        on_wait: OnWait | None) -> tuple[StorePath, ...]:
        refs = tuple(sorted(set(references)))
        for ref in refs:
            if ref != path and self._pin_valid(ref, on_wait) is None:
                raise StoreError(f"{path.name} refers to {ref}, which is not in the store at "
                                 f"{self.root}; build {ref.name} first")
        return refs

    def _pin_valid(self, path: StorePath, on_wait: OnWait | None) -> PathInfo | None:
        """Pin ``path`` and its references; its info, or None (and no pin) if not valid."""
        if path not in self._pins:
            self._pins[path] = self._lock(path, shared=True, on_wait=on_wait)
        info = self.query(path)
        if info is None:
            os.close(self._pins.pop(path))
            return None
        for ref in info.references:
            if ref not in self._pins:
                self._pin_valid(ref, on_wait)
        return info

    def _lock(self, path: StorePath, *, shared: bool, on_wait: OnWait | None) -> int:
        """Lock ``path``, calling ``on_wait(path)`` first if another process holds it."""
        file = self._lock_file(path.name)
        fd = fsutil.try_lock_file(file, shared=shared)
        if fd is None:
            if on_wait is not None:
                on_wait(path)
            fd = fsutil.lock_file(file, shared=shared)
        return fd

    def _try_lock(self, basename: str) -> int | None:
        """Lock ``basename``'s path exclusively if that needs no waiting."""
        return fsutil.try_lock_file(self._lock_file(basename), shared=False)

    # Roots and garbage collection ------------------------------------------------------

    def add_root(self, link: Path, target: StorePath) -> None:
        """Make ``link`` a symlink to ``target`` (atomically) and register it as a gc root."""
        link = Path(os.path.abspath(link))
        if self._pin_valid(target, None) is None:
            raise StoreError(f"cannot point {link} at {target}: it is not in the store at "
                             f"{self.root}; build it first")
        if os.path.lexists(link) and not link.is_symlink():
            raise StoreError(f"{link} exists and is not a symlink; remove it or choose "
                             "another out-link")
        fd = fsutil.lock_file(self._lock_file(_GC_LOCK), shared=True)
        try:
            fsutil.replace_symlink(link, str(target))
            registration = hashlib.sha256(os.fsencode(link)).hexdigest()[:32]
            fsutil.replace_symlink(self.root / _ROOTS / registration, str(link))
        except OSError as err:
            raise StoreError(f"cannot create out-link {link} ({err.strerror}); choose a "
                             "folder you can write") from err
        finally:
            os.close(fd)

    def roots(self) -> list[tuple[Path, StorePath]]:
        """Live roots as (out-link, target), sorted; stale registrations are dropped."""
        fd = fsutil.try_lock_file(self._lock_file(_GC_LOCK), shared=False)
        try:
            return self._roots(clean=fd is not None)
        finally:
            if fd is not None:
                os.close(fd)

    def _roots(self, *, clean: bool) -> list[tuple[Path, StorePath]]:
        """Live roots; with ``clean`` (gc lock held exclusively) remove stale registrations."""
        found = []
        for name in sorted(os.listdir(self.root / _ROOTS)):
            registration = self.root / _ROOTS / name
            root = None if name.startswith(".") else self._link_target(registration)
            if root is not None:
                found.append(root)
            elif clean:
                registration.unlink(missing_ok=True)
        return sorted(found)

    def _link_target(self, registration: Path) -> tuple[Path, StorePath] | None:
        """(out-link, store path) for a registration whose link still points into the store."""
        try:
            link = Path(os.readlink(registration))
            target = os.path.normpath(link.parent / os.readlink(link))
        except OSError:
            return None
        path = self._as_store_path(Path(target))
        return None if path is None else (link, path)

    def gc(self, *, dry_run: bool = False) -> GcResult:
        """Delete every valid path no root reaches and no process has locked; clean debris.

        Paths are taken referrers first, and a path skipped because it is in use keeps
        everything it references, so no path survives without its references.
        """
        gc_fd = fsutil.lock_file(self._lock_file(_GC_LOCK), shared=False)
        try:
            graph = {path: self._references(path) for path in self.paths()}
            live = _closure((target for _, target in self._roots(clean=not dry_run)), graph)
            deleted: list[StorePath] = []
            freed = 0
            for path in _referrers_first(graph):
                if path in live:
                    continue
                size = self._collect(path, dry_run)
                if size is None:
                    live |= _closure([path], graph)
                else:
                    deleted.append(path)
                    freed += size
            if not dry_run:
                self._clean_debris()
                self._clean_locks()
            return GcResult(tuple(sorted(deleted)), freed)
        finally:
            os.close(gc_fd)

    def _collect(self, path: StorePath, dry_run: bool) -> int | None:
        """Delete ``path`` if its lock is free; its disk usage, or None if it was kept."""
        fd = self._try_lock(path.name)
        if fd is None:
            return None
        if not self.is_valid(path):
            os.close(fd)
            return None
        size = fsutil.disk_usage(path)
        if dry_run:
            os.close(fd)
        else:
            # Meta first: the path stops being valid at once, and a crash leaves debris.
            self._meta_file(path.name).unlink()
            fsutil.remove_tree(path)
            fsutil.unlink_locked(self._lock_file(path.name), fd)
        return size

    def _references(self, path: StorePath) -> tuple[StorePath, ...]:
        info = self._read_meta(path)
        return () if info is None else info.references

    def copy_from(self, other: Store, path: StorePath) -> PathInfo:
        """Add ``other``'s valid path of the same name here (hard-linked where possible).

        The copy is re-hashed and must match what ``other`` recorded, so a damaged source
        path is refused rather than spread.
        """
        info = other.query(path)
        if info is None:
            raise StoreError(f"{path} is not a valid path in the store at {other.root}")
        target = StorePath(self.root / path.name)
        return self.add(target, lambda out: fsutil.link_tree(path, out),
                        expected=info.nar_hash,
                        references=[StorePath(self.root / r.name) for r in info.references],
                        inputs=info.inputs)

    # Scratch space and the outputs index -----------------------------------------------

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private, empty folder on the store's file system, removed afterwards.

        Stages build here when the store path is not known before the build (an undeclared
        hash, a second build for comparison). The folder is flock'ed while in use; a crashed
        process's scratch folder is removed by the next Store opened on this root.
        """
        work = self.root / _TMP / fsutil.temp_name(_SCRATCH)
        os.mkdir(work, 0o700)
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield work
        except OSError as err:
            if fsutil.is_disk_full(err):
                raise StoreFullError(self.root, "a scratch build") from err
            raise
        finally:
            fsutil.remove_tree(work)
            os.close(fd)

    @contextmanager
    def exclusive(self, key: str, *, on_wait: Callable[[], None] | None = None
                  ) -> Iterator[None]:
        """Hold the store-wide lock named ``key`` (one build of the same inputs at a time).

        ``on_wait()`` is called before blocking when another process holds it.
        """
        # The lock file's name starts with '.', so it is never taken for a path's lock.
        file = self.root / _LOCKS / f".key-{_check_key(key)}.lock"
        fd = fsutil.try_lock_file(file, shared=False)
        if fd is None:
            if on_wait is not None:
                on_wait()
            fd = fsutil.lock_file(file, shared=False)
        try:
            yield
        finally:
            os.close(fd)

    def record_output(self, key: str, path: StorePath) -> None:
        """Remember that the inputs summed up by ``key`` produced ``path``."""
        file = self.root / _OUTPUTS / _check_key(key)
        fsutil.write_atomic(file, path.name.encode(), temp=file.with_name(f".{key}.tmp"))

    def lookup_output(self, key: str) -> StorePath | None:
        """The valid path recorded for ``key`` by :meth:`record_output`, if any."""
        try:
            name = (self.root / _OUTPUTS / _check_key(key)).read_text().strip()
        except FileNotFoundError:
            return None
        path = self._as_store_path(self.root / name)
        return path if path is not None and self.is_valid(path) else None

    # Debris ----------------------------------------------------------------------------

    def _clean_debris(self) -> None:
        """Remove leftovers of crashed builds, for each path whose lock is free now."""
        entries = {name for name in os.listdir(self.root) if not name.startswith(".")}
        metas = {name.removesuffix(".json") for name in os.listdir(self.root / _META)}
        temps = {name.split("~", 1)[0] for name in os.listdir(self.root / _TMP)}
        self._clean_scratch()
        unsealed = {name for name in entries & metas if _top_unsealed(self.root / name)}
        for basename in sorted((entries ^ metas) | temps | unsealed):
            if not _BASENAME_RE.fullmatch(basename):
                continue  # not a store path's: leave what we did not make alone
            fd = self._try_lock(basename)
            if fd is not None:
                try:
                    self._remove_debris(basename)
                finally:
                    os.close(fd)

    def _clean_scratch(self) -> None:
        """Remove scratch folders no live process holds."""
        for name in os.listdir(self.root / _TMP):
            if name.split("~", 1)[0] != _SCRATCH:
                continue
            work = self.root / _TMP / name
            try:
                fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                fsutil.remove_tree(work)
            finally:
                os.close(fd)

    def _clean_locks(self) -> None:
        """Delete the lock files of paths that do not exist (failed builds) if they are free."""
        for name in os.listdir(self.root / _LOCKS):
            basename = name.removesuffix(".lock")
            if (not _BASENAME_RE.fullmatch(basename) or os.path.lexists(self.root / basename)
                    or self._meta_file(basename).exists()):
                continue
            fd = self._try_lock(basename)
            if fd is not None:
                fsutil.unlink_locked(self._lock_file(basename), fd)

    def _remove_debris(self, basename: str) -> None:
        """With ``basename``'s lock held: drop its temp files and a half of an invalid path."""
        for name in os.listdir(self.root / _TMP):
            if name.split("~", 1)[0] == basename:
                fsutil.remove_tree(self.root / _TMP / name)
        entry, meta = self.root / basename, self._meta_file(basename)
        if os.path.lexists(entry) != meta.exists():
            meta.unlink(missing_ok=True)
            fsutil.remove_tree(entry)
        elif meta.exists() and _top_unsealed(entry):
            _seal_top(entry)

    def _meta_file(self, basename: str) -> Path:
        return self.root / _META / f"{basename}.json"

    def _lock_file(self, basename: str) -> Path:
        return self.root / _LOCKS / f"{basename}.lock"


@dataclass(frozen=True, slots=True)
class _Build:
    """What :meth:`Store.add` passes down to the build of one path."""

    expected: Sha256 | None
    references: tuple[StorePath, ...]
    inputs: dict[str, object] | None
    progress: Callable[[int], None] | None
    hashed: NarResult | None = None


def _is_dir(path: Path) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


def _seal_top(path: Path) -> None:
    """Make the top folder of the store path ``path`` read-only with the canonical time."""
    if _is_dir(path):
        os.chmod(path, fsutil.SEALED_DIR)
        os.utime(path, ns=(CANONICAL_MTIME * 10**9,) * 2, follow_symlinks=False)


def _top_unsealed(path: Path) -> bool:
    """True for a store path whose top folder a crash left writable (see _publish)."""
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != fsutil.SEALED_DIR


def _json_inputs(inputs: Mapping[str, object] | None) -> dict[str, object] | None:
    """``inputs`` as it reads back from JSON, so a fresh and a reused PathInfo compare equal."""
    if inputs is None:
        return None
    loaded: dict[str, object] = json.loads(json.dumps(dict(inputs), allow_nan=False))
    return loaded


def _check_key(key: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", key):
        raise ValueError(f"not an outputs key: {key!r}")
    return key


def _open_layout(root: Path) -> Path:
    """Create the store's folders under ``root`` if missing; its resolved path."""
    root = Path(os.path.abspath(root))
    try:
        if root.exists() and not root.is_dir():
            raise StoreAccessError(root, "is not a directory")
        for sub in ("", _TMP, _LOCKS, _META, _ROOTS, _OUTPUTS):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # mkdir succeeds on folders that exist, even read-only ones, and os.access trusts mode
        # bits that root bypasses: creating a file is the real test, os.access the cheap one.
        probe = root / _LOCKS / fsutil.temp_name(".probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        probe.unlink()
        for sub in (_TMP, _META, _ROOTS):
            if not os.access(root / sub, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root / sub))
    except OSError as err:
        raise StoreAccessError(root, f"is not writable ({err.strerror}: {err.filename})") from err
    return root.resolve()


def _closure(start: Iterable[StorePath], graph: Mapping[StorePath, Sequence[StorePath]]
             ) -> set[StorePath]:
    """``start`` and everything reachable from it through references."""
    seen: set[StorePath] = set()
    pending = list(start)
    while pending:
        path = pending.pop()
        if path not in seen:
            seen.add(path)
            pending.extend(graph.get(path, ()))
    return seen


def _referrers_first(graph: Mapping[StorePath, Sequence[StorePath]]) -> list[StorePath]:
    """Every path of ``graph``, each before the paths it references (self-references aside)."""
    order: list[StorePath] = []
    done: set[StorePath] = set()
    for start in sorted(graph):
        if start in done:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        done.add(start)
        while stack:
            path, refs = stack[-1]
            for ref in refs:
                if ref in graph and ref not in done:
                    done.add(ref)
                    stack.append((ref, iter(sorted(graph[ref]))))
                    break
            else:
                stack.pop()
                order.append(path)
    order.reverse()
    return order
