"""The app's own files: digests that key the assembly stage, and the copies it makes.

What is hashed is exactly what is copied (the same ignore rules), so the assembly stage's
key changes if and only if something it uses changes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from venvseal.errors import VenvsealError

# Never part of an app's source: VCS data, local venvs, bytecode, build debris.
IGNORED = (".git", ".hg", ".venv", "__pycache__", "*.pyc", "*.pyo", ".mypy_cache",
           ".pytest_cache", ".ruff_cache", "*.egg-info")
# Build output a tool keeps beside its manifest (marker, output): cargo's target/ beside
# Cargo.toml holds a developer's local builds (often gigabytes), never a source.
BESIDE = (("Cargo.toml", "target"),)


class SourceError(VenvsealError):
    """A source path is missing, unreadable or escapes the project."""


def _ignored(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in (*IGNORED, *patterns))


def debris(names: Collection[str]) -> set[str]:
    """The entries among a folder's ``names`` that are build output by where they are
    (:data:`BESIDE`): ``target`` only beside a ``Cargo.toml``, a source folder elsewhere."""
    return {out for marker, out in BESIDE if marker in names and out in names}


def inside(base: Path, rel: str, *, what: str) -> Path:
    """``base/rel`` resolved, refusing anything (``..``, symlinks) that leads outside base."""
    path = base / rel
    # realpath, not Path.resolve, which raises on a symlink loop (Python < 3.13).
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(base)):
        raise SourceError(f"{what}: {rel} leads outside {base} (through '..' or a symlink); "
                          "copy only files inside the project")
    if not os.path.lexists(path):
        raise SourceError(f"{what}: {rel} does not exist in {base}; fix the path")
    return path


def tree_digest(path: Path, exclude: Sequence[str] = (), *,
                absolute_links: bool = True) -> str:
    """sha256 over the sorted relative paths, executable bits, link targets and contents;
    symlinks with an absolute target are left out unless ``absolute_links``."""
    h = hashlib.sha256()
    base = path
    for rel, kind, extra in _entries(base, exclude):
        if kind == "l" and not absolute_links and extra.startswith("/"):
            continue
        h.update(f"{kind}\0{rel}\0{extra}\0".encode("utf-8", "surrogateescape"))
        if kind == "f":
            try:
                with open(base / rel if rel else base, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            except OSError as err:
                raise SourceError(f"{base / rel}: cannot read it ({err.strerror}); fix its "
                                  "permissions or exclude it") from err
    return h.hexdigest()


def _entries(base: Path, exclude: Sequence[str]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        full = base / rel if rel else base
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            out.append((rel, "l", os.readlink(full)))
        elif stat.S_ISDIR(st.st_mode):
            out.append((rel, "d", ""))
            try:
                names = sorted(os.listdir(full))
            except OSError as err:
                raise SourceError(f"{full}: cannot list it ({err.strerror})") from err
            skipped = debris(names)
            pending.extend(f"{rel}/{n}" if rel else n for n in reversed(names)
                           if not _ignored(n, exclude) and n not in skipped)
        elif stat.S_ISREG(st.st_mode):
            out.append((rel, "f", "x" if st.st_mode & stat.S_IXUSR else ""))
        else:
            raise SourceError(f"{full}: not a file, directory or symlink; remove or exclude it")
    out.sort()
    return out


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def copy_tree(source: Path, dest: Path, exclude: Sequence[str] = (), *,
              within: Path | None = None,
              make_dir: Callable[[Path], Path] = _mkdir) -> list[Path]:
    """Copy ``source`` (file or folder) to ``dest`` with the ignore rules; the files written.

    With ``within``, a symlink whose target lies outside that folder is refused.
    ``make_dir(folder)`` creates a folder (and its parents) before anything is put in it and
    returns where it really is: the assembly's makes linked folders the closure's own first
    and resolves every symlink on the way (forest.py), so nothing is written through one.
    """
    written: list[Path] = []
    for rel, kind, extra in _entries(source, exclude):
        target = dest / rel if rel else dest
        if kind == "d":
            make_dir(target)
            continue
        target = make_dir(target.parent) / target.name
        if kind == "l":
            link = source / rel if rel else source
            if within is not None:
                _check_link(link, extra, within)
            _replaceable(target)
            os.symlink(extra, target)
        else:
            _replaceable(target)
            shutil.copyfile(source / rel if rel else source, target)
            os.chmod(target, 0o755 if extra else 0o644)
            written.append(target)
    return written


def _check_link(link: Path, target: str, within: Path) -> None:
    """Refuse a symlink that leads outside ``within``, or nowhere (dangling, or a loop)."""
    real = Path(os.path.realpath(link.parent / target))
    if not real.is_relative_to(os.path.realpath(within)):
        raise SourceError(f"{link}: symlink to {target} leads outside {within}; "
                          "replace it with the file or drop it")
    if not os.path.exists(link):  # follows the link: False for a dangling one or a loop
        raise SourceError(f"{link}: symlink to {target} leads nowhere (its target does not "
                          "exist, or the links form a loop); fix it, drop it or exclude it")


def _replaceable(target: Path) -> None:
    """Make room for ``target``: an existing file or symlink there is unlinked, not written.

    Writing into it could go through a link into the sealed deps store path (the closure
    links to it, see forest.py, and root may write read-only files).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink():
        raise SourceError(f"{target} is a folder in the closure already; copy to another "
                          "destination")
    if os.path.lexists(target):
        target.unlink()
