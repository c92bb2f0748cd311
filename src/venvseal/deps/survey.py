"""One walk of the venv uv made: what to delete, and every regular file that stays.

Normalisation needs two lists of the same tree: per-run litter (bytecode, uv's markers) and
the files that stay, of which it edits the ELF files. One sorted ``os.scandir`` walk gives
both without opening a file; separate walks cost ~0.4 s on the demo's 5,000-file venv, more
than a third of a warm ``uv sync`` (issue 16). The references to build paths are searched in
the NAR hash's read of every file (normalise.hash_normalised).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Written by uv per run at the venv's root (uv: crates/uv-virtualenv, cache-dir tag and lock).
ROOT_LITTER = ("bin", ".lock", "CACHEDIR.TAG", ".gitignore")
# Written by uv into the dist-info of a local (path) install: the sources' mtimes at install
# time, for its own freshness check (uv: crates/uv-cache-info), so it differs per run.
DIST_INFO_LITTER = ("uv_cache.json",)
BYTECODE_SUFFIXES = (".pyc", ".pyo")
# Files that are text by their installer's contract (sources, metadata, catalogues, web
# assets): never opened to look for the ELF magic, ~90% of a Django venv's files.
TEXT_SUFFIXES = (".py", ".pyi", ".txt", ".json", ".md", ".rst", ".html", ".js", ".css", ".po",
                 ".mo", ".typed", ".cfg", ".toml", ".csv", ".svg", ".xml", ".yaml", ".yml",
                 ".ini", ".map", ".pem", "/RECORD", "/METADATA", "/WHEEL", "/INSTALLER")


@dataclass(frozen=True, slots=True)
class Survey:
    """The venv's litter (top-level paths to delete) and its other regular files, sorted."""

    litter: tuple[Path, ...]
    files: tuple[str, ...]  # as strings: a Path per file cost a third of the walk

    def maybe_elf(self) -> list[Path]:
        """The files that may be ELF: all but those with a text suffix."""
        return [Path(p) for p in self.files if not p.endswith(TEXT_SUFFIXES)]


def survey(venv: Path, keep: frozenset[Path] = frozenset()) -> Survey:
    """Walk ``venv`` once, symlinks never followed (a linked ``__pycache__`` is kept); no
    file is opened or stat'ed (the NAR hash's walk reads them all: normalise.py).
    ``keep``: files of ``bin/`` that stay (a distribution's own scripts, see scripts.py);
    the rest of ``bin/`` is litter, and all of it when there are none.

    Plain strings inside: Path objects made and compared per entry were a third of the time.
    """
    root = os.fspath(venv)
    litter = [venv / name for name in ROOT_LITTER if os.path.lexists(venv / name)]
    files: list[str] = []
    if keep:
        bin_dir = venv / "bin"
        litter.remove(bin_dir)
        litter += sorted(p for p in bin_dir.iterdir() if p not in keep)
        files += map(os.fspath, sorted(keep))
    stack = [root]
    while stack:
        here = stack.pop()
        with os.scandir(here) as it:
            entries = sorted(it, key=_by_name)
        dist_info = here.endswith(".dist-info")
        at_root = here == root
        subdirs: list[str] = []
        for entry in entries:
            name = entry.name
            if at_root and name in ROOT_LITTER:
                continue
            if entry.is_dir(follow_symlinks=False):
                if name == "__pycache__":
                    litter.append(Path(entry.path))
                else:
                    subdirs.append(entry.path)
            elif name.endswith(BYTECODE_SUFFIXES) or (dist_info and name in DIST_INFO_LITTER):
                litter.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                files.append(entry.path)
        stack.extend(reversed(subdirs))  # depth first, in name order
    files.sort(key=_walk_order)
    return Survey(tuple(litter), tuple(files))


def _by_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _walk_order(path: str) -> list[str]:
    return path.split("/")  # Path.parts' order: os.scandir joins with exactly one "/"


def delete(doomed: Sequence[Path]) -> frozenset[Path]:
    """Delete each path (a folder with its contents); return every file removed."""
    removed = frozenset(file for top in doomed for file in _files_under(top))
    for top in doomed:
        if top.is_dir() and not top.is_symlink():
            shutil.rmtree(top)
        else:
            top.unlink()
    return removed


def copy_linked(linked: Sequence[Path]) -> None:
    """Give each multiply-linked file its own inode.

    uv links installed files from its cache by default, and the edits that follow write in
    place (``strip`` too writes through hard links, binutils smart_rename): unlinking first
    keeps the cache intact. The NAR format does not record hard links, so the hash is the same.
    """
    for path in linked:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".venvseal-")
        os.close(fd)
        shutil.copy2(path, temp)
        os.replace(temp, path)


def remove_build_litter(venv: Path) -> frozenset[Path]:
    """Delete ``bin/``, uv's markers and all bytecode; return every file removed."""
    return delete(list(_litter(venv)))


def _litter(venv: Path) -> Iterator[Path]:
    """Top-level paths to delete, sorted: root markers, __pycache__, bytecode, uv's markers."""
    for name in ROOT_LITTER:
        if os.path.lexists(venv / name):
            yield venv / name
    for dirpath, dirnames, filenames in os.walk(venv):
        dirnames.sort()
        here = Path(dirpath)
        if here == venv:
            dirnames[:] = [d for d in dirnames if d not in ROOT_LITTER]
        # A linked __pycache__ (forest.py) is the deps path's bytecode, not this run's.
        for name in [d for d in dirnames
                     if d == "__pycache__" and not os.path.islink(here / d)]:
            dirnames.remove(name)
            yield here / name
        dist_info = here.name.endswith(".dist-info")
        yield from (here / f for f in sorted(filenames)
                    if f.endswith(BYTECODE_SUFFIXES) or (dist_info and f in DIST_INFO_LITTER))


def _files_under(top: Path) -> Iterator[Path]:
    """``top`` itself if it is not a directory, else every non-directory below it."""
    if top.is_symlink() or not top.is_dir():
        yield top
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        here = Path(dirpath)
        yield from (here / f for f in sorted(filenames))
        # os.walk lists symlinks to directories with the directories and does not enter them.
        yield from (here / d for d in dirnames if (here / d).is_symlink())
