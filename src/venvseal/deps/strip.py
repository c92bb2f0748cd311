"""Removing debug info from ELF files without ever breaking one.

Debug info records uv's random build folder, so files that have it are stripped
(``strip --strip-debug`` with the toolchain's binutils). Files without it are left alone:
binutils 2.40 (Debian 12) rewrites the layout of some of them even when there is nothing to
remove, and numpy >= 2.0's ``numpy.libs/libscipy_openblas64_*.so`` and ``libgfortran*.so``
come out with LOAD segments the dynamic loader refuses ("ELF load command address/offset not
page-aligned"; issue 12). As a last guard, every stripped file that the toolchain's loader
accepted before must still be accepted after; one it no longer accepts is put back as it
was, and reported.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

# Run ``strip --strip-debug`` on the files given (all at once).
StripDebug = Callable[[Sequence[Path]], None]
# The files, of those given, that the toolchain's dynamic loader accepts (ld.so --verify).
LoaderAccepts = Callable[[Sequence[Path]], set[Path]]
# Strip the files given (all at once), putting back as it was each one the loader accepted
# before and refuses after; return those put back. :func:`guarded` makes one from the two
# above; the deps stage runs the same steps in one sandbox (deps/stage.py).
GuardedStrip = Callable[[Sequence[Path]], set[Path]]


@dataclass(frozen=True, slots=True)
class StripResult:
    """Which ELF files were stripped, and which strip would have broken (kept as they were)."""

    stripped: tuple[Path, ...]
    kept: tuple[Path, ...]


def has_debug_info(path: Path) -> bool:
    """Whether the ELF file has DWARF sections (``.debug_*``, or compressed ``.zdebug_*``)."""
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            return any(s.name.startswith((".debug", ".zdebug")) for s in elf.iter_sections())
    except ELFError:
        return False  # not one this tool reads: leave it as it is


def strip_safely(elf_files: Sequence[Path], *, strip: GuardedStrip) -> StripResult:
    """Strip the debug info of those ``elf_files`` that have some, with ``strip`` (which
    undoes it for any file the loader accepted before and refuses after)."""
    with_debug = [path for path in elf_files if has_debug_info(path)]
    if not with_debug:
        return StripResult((), ())
    broken = strip(with_debug)
    return StripResult(tuple(p for p in with_debug if p not in broken), tuple(sorted(broken)))


def guarded(strip_debug: StripDebug, accepts: LoaderAccepts | None = None,
            scratch: Path | None = None) -> GuardedStrip:
    """``strip_debug`` guarded by ``accepts`` (None: not guarded); ``scratch`` holds the
    originals meanwhile (default: the system's temporary folder)."""
    def strip(files: Sequence[Path]) -> set[Path]:
        if accepts is None:
            strip_debug(files)
            return set()
        before = accepts(files)
        with tempfile.TemporaryDirectory(dir=scratch, prefix=".venvseal-unstripped-") as keep:
            originals = {}
            for i, path in enumerate(files):
                if path in before:
                    originals[path] = Path(keep) / str(i)
                    shutil.copy2(path, originals[path])
            strip_debug(files)
            after = accepts(list(originals)) if originals else set()
            broken = {path for path in originals if path not in after}
            for path in broken:
                shutil.copy2(originals[path], path)
        return broken
    return strip
