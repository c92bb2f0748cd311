"""Libraries that code loads by name: ``ctypes.CDLL("libmagic.so.1")``,
``ctypes.util.find_library("magic")``, ``cffi``'s ``ffi.dlopen("sodium")`` in Python files,
and library file names in an ELF file's read-only data (a ``dlopen`` in C or Rust).

No loader sees these: the name is a string in a ``.py`` file. They are found as string
literals passed to those calls in the installed distributions' Python files, and looked up
in the toolchain's library folders the way the loader (a file name: ``libX.so.N``) or
``find_library`` (a bare name: ``libNAME.so.<version>``, from ld.so.cache) would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Cheap first test on the bytes, before the regular expression runs.
_HINTS = (b"CDLL", b"LoadLibrary", b"find_library", b"dlopen", b"PyDLL")
_CALL = re.compile(rb"""(?:CDLL|PyDLL|LoadLibrary|find_library|dlopen)\(\s*[rbuRBU]?(['"])"""
                   rb"""([A-Za-z0-9_.+-]+)\1""")
# Names for other systems, never found in a Linux root.
_FOREIGN = (".dll", ".dylib")
_WINDOWS = frozenset(("advapi32", "crypt32", "dbghelp", "gdi32", "kernel32", "msvcrt", "ntdll",
                      "ole32", "oleaut32", "psapi", "secur32", "shell32", "user32", "version",
                      "winmm", "ws2_32"))


@dataclass(frozen=True, slots=True)
class ByName:
    """One library name a Python file loads, and where (closure-relative file)."""

    name: str
    file: str


def scan(tree: Path) -> list[ByName]:
    """Every library name passed as a literal to a loading call in ``tree``'s .py files."""
    found: dict[str, ByName] = {}
    for rel, path in _python_files(tree, ""):
        with open(path, "rb") as f:
            data = f.read()
        if not any(h in data for h in _HINTS):
            continue
        for m in _CALL.finditer(data):
            name = m[2].decode("ascii")
            if not name.endswith(_FOREIGN) and name.lower() not in _WINDOWS \
                    and name not in found:
                found[name] = ByName(name, rel)
    return sorted(found.values(), key=lambda b: b.name)


# A library file name in read-only data. C strings end in NUL; Rust's are packed end to end
# ("...libkadm5clnt_mit.solibkadm5srv_mit.so..."), so a name ends at its first ".so" (and
# version numbers).
_SONAME = re.compile(rb"lib[A-Za-z0-9_.+-]+?\.so(?:\.[0-9]+)*")
_RODATA = (".rodata", ".rodata.str1.1", ".rodata.str1.8")


def scan_elf(tree: Path, elf_files: list[str]) -> list[ByName]:
    """Library file names in the read-only data of ``tree``'s ELF files (``elf_files``,
    relative): names a program passes to ``dlopen`` itself, as python-kadmin-rs does with
    ``libkadm5clnt_mit.so``. The names its loader resolves (``.dynstr``) are not read."""
    from elftools.common.exceptions import ELFError  # lazy: pyelftools is only needed here
    from elftools.elf.elffile import ELFFile

    found: dict[str, ByName] = {}
    for rel in elf_files:
        try:
            with open(tree / rel, "rb") as f:
                elf = ELFFile(f)
                data = b"".join(s.data() for s in elf.iter_sections() if s.name in _RODATA)
        except (ELFError, OSError):
            continue
        for m in _SONAME.finditer(data):
            name = m[0].decode("ascii")
            found.setdefault(name, ByName(name, rel))
    return sorted(found.values(), key=lambda b: b.name)


def _python_files(folder: Path, prefix: str) -> Iterator[tuple[str, str]]:
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _python_files(Path(entry.path), f"{prefix}{entry.name}/")
        elif entry.name.endswith(".py") and entry.is_file(follow_symlinks=True):
            yield prefix + entry.name, entry.path


def candidates(name: str) -> tuple[str, ...] | None:
    """Glob patterns for the files a bare name (``magic``) may be, most likely first; None
    for an exact file name (``libmagic.so.1``), which is looked up as it is."""
    if ".so" in name:
        return None
    base = name if name.startswith("lib") else f"lib{name}"
    return (f"{base}.so.[0-9]*", f"{base}.so")


def find_in(folders: list[tuple[PurePosixPath, Path]], name: str) -> PurePosixPath | None:
    """The library ``name`` in the first of ``folders`` (root path, host path) that has it."""
    patterns = candidates(name)
    for logical, host in folders:
        if patterns is None:
            if (host / name).exists():
                return logical / name
            continue
        for pattern in patterns:
            hits = sorted(host.glob(pattern), key=lambda p: (len(p.name), p.name))
            if hits:
                return logical / hits[0].name
    return None
