"""Find and remove references to build-time paths, keeping every file's length.

A fixed-output stage must not mention where it was built: the sandbox's build root
(``/venvseal-build/``, with uv's random sdist directories under it) or a Nix store path of a
build-time tool. Like nixpkgs' ``remove-references-to`` (pkgs/build-support/remove-references-to),
each reference is overwritten in place by a string of the same length, so offsets inside ELF
files, archives and zip directories stay valid:

- a build-root token (the prefix and the path characters after it) becomes ``/eee...e``, so
  no trace of the prefix remains;
- ``/nix/store/<32 nix32 characters>-name`` keeps its shape and only the hash becomes
  ``eee...e``, exactly as remove-references-to does (``e`` is not a nix32 digit, so the result
  is no longer a store path).

:func:`scan` is read-only and returns a :class:`RefReport`; :func:`strip_references` applies it;
:func:`assert_clean` scans again and raises if anything is left. Regular files (text and
binary alike) and symlink targets are searched; symlinks are never followed.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from venvseal.errors import VenvsealError

DEFAULT_BUILD_ROOT = b"/venvseal-build/"
NIX_STORE_DIR = b"/nix/store/"
# Characters that continue a path token after the build-root prefix.
_PATH_CHARS = rb"[A-Za-z0-9._+\-/=~@%,:]"
# Nix's base-32 alphabet omits e, o, t and u (libutil/hash.cc, base32Chars).
_NIX32 = rb"[0-9a-df-np-sv-z]"
_NIX_HASH_LENGTH = 32
# Characters Nix allows in a store path name (libstore/path.cc, checkName).
_NIX_NAME_CHARS = rb"[A-Za-z0-9+\-._?=]"
# Files up to this size are read whole; larger ones are mapped so memory stays flat.
_MMAP_THRESHOLD = 1 << 20
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(eq=False)
class RefsIOError(VenvsealError):
    """A file could not be read or rewritten while looking for references."""

    path: Path
    error: OSError

    def message(self) -> str:
        return (f"{self.path}: cannot check it for build-path references "
                f"({self.error.strerror or self.error}); make it readable and writable")


class Reference(NamedTuple):
    """One distinct reference and the files (relative to the scanned root) that contain it."""

    text: bytes
    files: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class RefReport:
    """What :func:`scan` found: every distinct reference, sorted, with the files holding it."""

    prefixes: tuple[bytes, ...]
    nix_store: bool
    references: tuple[Reference, ...]

    @property
    def distinct_count(self) -> int:
        """How many distinct references were found."""
        return len(self.references)

    @property
    def files(self) -> frozenset[Path]:
        """Every file (relative to the scanned root) holding at least one reference."""
        return frozenset(f for ref in self.references for f in ref.files)

    def by_file(self) -> dict[Path, set[bytes]]:
        """The references each file holds (the inverse of :func:`report_of`)."""
        found: dict[Path, set[bytes]] = {}
        for ref in self.references:
            for file in ref.files:
                found.setdefault(file, set()).add(ref.text)
        return found

    @property
    def files_count(self) -> int:
        """How many files hold at least one reference."""
        return len(self.files)

    def summary(self) -> str:
        """One line for a progress display, e.g. ``3 references in 2 files``."""
        return f"{_count(self.distinct_count, 'reference')} in {_count(self.files_count, 'file')}"


@dataclass(eq=False)
class ReferencesRemainError(VenvsealError):
    """References to build-time paths are still present where none may be."""

    root: Path
    report: RefReport

    def message(self) -> str:
        lines = [f"  {_show(ref.text)} in {self.root / ref.files[0]}"
                 for ref in self.report.references]
        return (f"{self.root}: {self.report.summary()} to build-time paths remain, so the output "
                "would not be reproducible; exclude the package that installs the file or "
                "report a venvseal bug. Each, with a file containing it:\n" + "\n".join(lines))


def compile_pattern(prefixes: Sequence[bytes], nix_store: bool = True) -> re.Pattern[bytes]:
    """The one regex matching every reference: build-root tokens and, if asked, store paths."""
    alternatives = []
    for prefix in prefixes:
        bare = prefix.rstrip(b"/")
        if not bare:
            raise ValueError(f"build root prefix {prefix!r} must name a directory below /")
        # The root followed by a path, or the root itself at the end of a token.
        alternatives.append(re.escape(bare) + rb"(?:/" + _PATH_CHARS + rb"*|(?!" + _PATH_CHARS
                            + rb"))")
    if nix_store:
        alternatives.append(re.escape(NIX_STORE_DIR) + rb"(?P<hash>" + _NIX32
                            + rb"{%d})-" % _NIX_HASH_LENGTH + _NIX_NAME_CHARS + rb"*")
    # A flat alternation whose branches all start with a literal lets the regex engine skip
    # ahead to candidate bytes; wrapping the build-root branches in a group made scans ~40x
    # slower (sre only computes a prefix charset for plain top-level branches).
    return re.compile(rb"|".join(alternatives) if alternatives else rb"(?!)")


class Spotter:
    """The files that may hold a reference, seen while another walk reads them (the NAR
    hash's: :class:`venvseal.store.nar.Watch`), so the tree is read once, not twice.

    A file is named when its bytes contain one of the literal prefixes every reference
    starts with (the build root without its slash, ``/nix/store/``), also across the pieces
    it is read in; :func:`find_in_file` then says which references, if any, it holds.
    """

    def __init__(self, prefixes: Sequence[bytes], nix_store: bool = True) -> None:
        literals = [prefix.rstrip(b"/") for prefix in prefixes]
        literals += [NIX_STORE_DIR] if nix_store else []
        self._search = re.compile(b"|".join(map(re.escape, literals))).search
        self._overlap = max(map(len, literals)) - 1  # a literal split across two pieces
        self.files: set[bytes] = set()  # paths as the walk gave them
        self._path = b""
        self._tail = b""

    def file(self, path: bytes) -> None:
        self._path = path
        self._tail = b""

    def piece(self, data: memoryview) -> None:
        if self._search(data) or (self._tail and self._search(
                self._tail + data[:self._overlap].tobytes())):
            self.files.add(self._path)
        self._tail = data[-self._overlap:].tobytes()

    def link(self, path: bytes, target: bytes) -> None:
        if self._search(target):
            self.files.add(path)


def replacement(match: re.Match[bytes]) -> bytes:
    """The same-length bytes that replace a reference matched by :func:`compile_pattern`."""
    text = match.group(0)
    if match.lastgroup == "hash":
        start, end = match.span("hash")
        offset = match.start()
        return text[: start - offset] + b"e" * (end - start) + text[end - offset:]
    return b"/" + b"e" * (len(text) - 1)


def scan(root: Path, prefixes: Sequence[bytes] = (DEFAULT_BUILD_ROOT,), *,
         nix_store: bool = True) -> RefReport:
    """Every reference under ``root`` (read-only); paths in the report are relative to it."""
    pattern = compile_pattern(prefixes, nix_store)
    found: dict[Path, set[bytes]] = {}
    for path, is_link in _entries(os.fspath(root)):
        if texts := find_in(path, is_link, pattern):
            found[Path(os.path.relpath(path, root))] = texts
    return report_of(found, prefixes, nix_store)


def report_of(found: Mapping[Path, Iterable[bytes]], prefixes: Sequence[bytes],
              nix_store: bool = True) -> RefReport:
    """The report of a scan that found, in each file, the references ``found`` maps it to
    (as :func:`find_in_file` and :func:`find_in_link` give them)."""
    by_text: dict[bytes, list[Path]] = {}
    for path, texts in found.items():
        for text in texts:
            by_text.setdefault(text, []).append(path)
    references = tuple(Reference(text, tuple(sorted(files)))
                       for text, files in sorted(by_text.items()))
    return RefReport(tuple(prefixes), nix_store, references)


def strip_references(root: Path, report: RefReport) -> frozenset[Path]:
    """Overwrite, in place and at the same length, every reference the report lists.

    Only references named in the report for that file are replaced (a file that changed since
    the scan is caught by :func:`assert_clean`). Returns the files changed, relative to ``root``.
    """
    pattern = compile_pattern(report.prefixes, report.nix_store)
    changed = set()
    for relative, texts in sorted(report.by_file().items()):
        if _rewrite(root / relative, pattern, texts):
            changed.add(relative)
    return frozenset(changed)


def assert_clean(root: Path, prefixes: Sequence[bytes] = (DEFAULT_BUILD_ROOT,), *,
                 nix_store: bool = True) -> None:
    """Scan ``root`` again; raise ReferencesRemainError listing anything still found."""
    report = scan(root, prefixes, nix_store=nix_store)
    if report.references:
        raise ReferencesRemainError(root, report)


def _entries(root: str) -> Iterator[tuple[str, bool]]:
    """(path, is_symlink) for every regular file and symlink under ``root``.

    Plain strings and an explicit stack: at 30,000 files, Path objects and nested generators
    cost more than the regex search itself.
    """
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.is_symlink():
                yield entry.path, True
            elif entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield entry.path, False
        stack.extend(reversed(subdirs))


def find_in(path: str, is_link: bool, pattern: re.Pattern[bytes]) -> set[bytes]:
    """The distinct references in one file's content, or in a symlink's target."""
    return find_in_link(path, pattern) if is_link else find_in_file(path, pattern)[0]


def find_in_link(path: str, pattern: re.Pattern[bytes]) -> set[bytes]:
    """The distinct references in the target of the symlink ``path``."""
    try:
        return {m.group(0) for m in pattern.finditer(os.readlink(os.fsencode(path)))}
    except OSError as err:
        raise RefsIOError(Path(path), err) from err


def find_in_file(path: str, pattern: re.Pattern[bytes]) -> tuple[set[bytes], os.stat_result]:
    """The distinct references in the regular file ``path`` (never followed), and its stat."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            size = st.st_size
            if size == 0:  # mmap refuses empty files, and there is nothing to find
                return set(), st
            if size <= _MMAP_THRESHOLD:
                return {m.group(0) for m in pattern.finditer(_read_all(fd, size))}, st
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                return {m.group(0) for m in pattern.finditer(mapped)}, st
        finally:
            os.close(fd)
    except OSError as err:
        raise RefsIOError(Path(path), err) from err


def _read_all(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``; one read() for a regular file, looped to be safe."""
    chunks = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _rewrite(path: Path, pattern: re.Pattern[bytes], texts: set[bytes]) -> bool:
    """Replace the planned references in one file or symlink; return whether it changed."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return _rewrite_link(path, pattern, texts)
        fd = os.open(path, os.O_RDWR | _OPEN_FLAGS)
        with open(fd, "r+b", buffering=0):
            if os.fstat(fd).st_size == 0:
                return False
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                edits = list(_edits(pattern.finditer(mapped), texts))
            for offset, new in edits:
                os.pwrite(fd, new, offset)
            return bool(edits)
    except OSError as err:
        raise RefsIOError(path, err) from err


def _edits(matches: Iterable[re.Match[bytes]], texts: set[bytes]) -> Iterator[tuple[int, bytes]]:
    """(offset, replacement) for each match whose text was planned."""
    for match in matches:
        if match.group(0) in texts:
            yield match.start(), replacement(match)


def _rewrite_link(path: Path, pattern: re.Pattern[bytes], texts: set[bytes]) -> bool:
    """Point a symlink at its target with the planned references replaced."""
    target = os.readlink(os.fsencode(path))
    new = pattern.sub(lambda m: replacement(m) if m.group(0) in texts else m.group(0), target)
    if new == target:
        return False
    os.unlink(path)
    os.symlink(new, os.fsencode(path))
    return True


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _show(text: bytes) -> str:
    """A reference as readable text (path characters are ASCII; anything else is escaped)."""
    return text.decode("ascii", "backslashreplace")
