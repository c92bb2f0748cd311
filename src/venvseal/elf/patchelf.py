"""Auto-patchelf: make every DT_NEEDED of every ELF file in a closure resolvable at run time.

Analysis first, then action (the auditwheel pattern). :func:`plan_patchelf` only reads: it
returns a frozen :class:`PatchPlan` with one :class:`ElfEdit` per file whose run path must
change. :func:`apply_plan` then makes one patchelf call per edit.

The closure runs with the toolchain root as ``/``. A library is found either inside the
closure, through a ``$ORIGIN``-relative entry that stays valid wherever the closure is put, or
in one of the recipe's library dirs, through an absolute entry naming a folder inside the
toolchain root. DT_RUNPATH, unlike DT_RPATH, serves only the object's own DT_NEEDED and not
its dependencies' (gABI "Shared Object Dependencies"; glibc elf/dl-load.c), so every ELF file
gets its own entries, the libraries bundled in ``<pkg>.libs/`` included.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, NamedTuple

from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile

from venvseal import process
from venvseal.elf.buildid import ElfFormatError, elf_errors, is_elf
from venvseal.errors import VenvsealError
from venvseal.toolchain.resolve import resolve_in_root

# glibc's own sonames (and the kernel's vDSO). They must come from the glibc that matches the
# toolchain's loader, which finds them in its built-in default folders; a run path entry for
# them would only add a way to pick up a mismatched copy. auditwheel's manylinux policies
# leave the same set alone. libcrypt.so.1 is libxcrypt's on Debian but lives alongside.
LIBC_FAMILY: tuple[str, ...] = (
    "linux-vdso.so.1", "linux-gate.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "ld-linux.so.2", "ld-linux-armhf.so.3",
    "ld64.so.1", "ld64.so.2", "ld-linux-riscv64-lp64d.so.1",
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "libutil.so.1", "libresolv.so.2", "libcrypt.so.1", "libanl.so.1", "libnsl.so.1",
    "libBrokenLocale.so.1", "libthread_db.so.1", "libc_malloc_debug.so.0",
)
LIBC_WHERE = "libc family: left to the toolchain's loader"
_ORIGIN_TOKENS = ("$ORIGIN", "${ORIGIN}")
_TAGS = ("DT_NEEDED", "DT_RUNPATH", "DT_RPATH", "DT_SONAME")


class Arch(NamedTuple):
    """What decides whether the loader accepts a library for a file: class, byte order, CPU."""

    elf_class: Literal[32, 64]
    little_endian: bool
    machine: str  # e_machine, as pyelftools names it (EM_X86_64, EM_AARCH64)


@dataclass(frozen=True, kw_only=True, slots=True)
class ElfInfo:
    """What the dynamic loader reads from one ELF file (header and PT_DYNAMIC)."""

    path: Path
    elf_class: Literal[32, 64]
    little_endian: bool
    machine: str
    osabi: str  # EI_OSABI, e.g. ELFOSABI_SYSV
    kind: str  # e_type: ET_DYN, ET_EXEC (ET_REL and ET_CORE have no dynamic section)
    needed: tuple[str, ...]
    runpath: tuple[str, ...]  # DT_RUNPATH, or DT_RPATH when there is no DT_RUNPATH
    soname: str | None

    @property
    def arch(self) -> Arch:
        return Arch(self.elf_class, self.little_endian, self.machine)


@dataclass(frozen=True, kw_only=True, slots=True)
class ElfEdit:
    """One file's planned run path change."""

    path: Path
    old_runpath: tuple[str, ...]
    new_runpath: tuple[str, ...]


class Resolution(NamedTuple):
    """Where one needed soname of one file is found (a run path entry, or why it is not)."""

    file: Path
    soname: str
    where: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchPlan:
    """Every run path change for a closure, and how each needed soname was resolved."""

    closure: Path
    edits: tuple[ElfEdit, ...]
    resolved: tuple[Resolution, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class MissingLibrary:
    """A soname no folder provides for a file (``file`` is relative to the closure)."""

    file: PurePosixPath
    soname: str
    other_arch: tuple[str, ...] = ()  # candidates skipped for their architecture

    def __str__(self) -> str:
        line = f"{self.file} -> {self.soname}"
        if self.other_arch:
            line += f" (only found for another architecture: {', '.join(self.other_arch)})"
        return line


@dataclass(eq=False)
class MissingLibrariesError(VenvsealError):
    """Needed libraries found neither in the closure nor in the toolchain; lists them all."""

    missing: Sequence[MissingLibrary]

    def __post_init__(self) -> None:
        self.missing = tuple(self.missing)

    def message(self) -> str:
        lines = [f"{len(self.missing)} needed shared libraries cannot be found "
                 "(file in the closure -> soname):"]
        lines += [f"  {m}" for m in self.missing]
        lines.append("install each library in the toolchain (its Debian package) or add its "
                     "folder to [toolchain] library-dirs, or add the soname to [assemble] "
                     "ignore-missing")
        return "\n".join(lines)


def read_elf(path: Path) -> ElfInfo:
    """Read ``path``'s header and dynamic tags; ElfFormatError (naming it) if it is damaged."""
    with elf_errors(path), open(path, "rb") as f:
        elf = ELFFile(f)
        tags: dict[str, list[str]] = {}
        # PT_DYNAMIC, as the loader reads it (section headers may be stripped).
        for tag in (t for s in elf.iter_segments() if isinstance(s, DynamicSegment)
                    for t in s.iter_tags()):
            if (name := tag.entry.d_tag) in _TAGS:
                tags.setdefault(name, []).append(getattr(tag, name[3:].lower()))
        header = elf.header
    paths = tags.get("DT_RUNPATH") or tags.get("DT_RPATH") or []
    return ElfInfo(
        path=path, elf_class=64 if elf.elfclass == 64 else 32,
        little_endian=bool(elf.little_endian), machine=str(header["e_machine"]),
        osabi=str(header["e_ident"]["EI_OSABI"]), kind=str(header["e_type"]),
        needed=tuple(tags.get("DT_NEEDED", ())),
        runpath=tuple(e for p in paths for e in p.split(":")) if any(paths) else (),
        soname=tags["DT_SONAME"][0] if "DT_SONAME" in tags else None,
    )


@dataclass
class _Finder:
    """Looks sonames up in the closure and in the toolchain; remembers every header read."""

    closure: Path
    root: Path
    library_dirs: Sequence[PurePosixPath]
    by_name: dict[str, list[Path]]  # every file and symlink in the closure, by name
    _arches: dict[Path, Arch | None] = field(default_factory=dict)

    def arch_of(self, path: Path) -> Arch | None:
        """The architecture of the ELF regular file ``path``; None if it is not one."""
        if path not in self._arches:
            try:
                elf = path.is_file() and is_elf(path)
                self._arches[path] = read_elf(path).arch if elf else None
            except ElfFormatError:  # a damaged candidate is no candidate
                self._arches[path] = None
        return self._arches[path]

    def accepts(self, path: Path, label: str, want: Arch, wrong: list[str]) -> bool:
        """Whether ``path`` is a library of arch ``want``; notes wrong-arch ones in ``wrong``."""
        arch = self.arch_of(path)
        if arch is not None and arch != want:
            wrong.append(f"{label} ({arch.machine}, {arch.elf_class}-bit)")
        return arch == want

    def in_closure(self, candidate: Path, want: Arch, wrong: list[str]) -> bool:
        """Whether ``candidate`` (maybe a symlink) is a suitable library inside the closure."""
        real = Path(os.path.realpath(candidate))
        if not (os.path.lexists(candidate) and real.is_relative_to(self.closure)):
            return False
        return self.accepts(real, str(candidate.relative_to(self.closure)), want, wrong)

    def origin_dir(self, entry: str, origin: Path) -> Path | None:
        """The closure folder a ``$ORIGIN`` entry names, or None (absolute, or outside)."""
        for token in _ORIGIN_TOKENS:
            if entry == token or entry.startswith(token + "/"):
                folder = Path(os.path.realpath(origin / entry[len(token):].lstrip("/")))
                inside = folder.is_dir() and folder.is_relative_to(self.closure)
                return folder if inside else None
        return None


def plan_patchelf(closure: Path, *, toolchain_root: Path,
                  library_dirs: Sequence[PurePosixPath],
                  ignore_missing: Sequence[str] = ()) -> PatchPlan:
    """Plan the run path of every ELF regular file in ``closure`` (read-only).

    Each needed soname is resolved in this order: the libc family is left alone; the file's
    existing ``$ORIGIN`` entries that point inside the closure are kept and searched; any
    closure folder holding a library of that name and of the file's architecture (the file's
    own folder first, then in sorted path order) gives a ``$ORIGIN/<relative>`` entry; the
    recipe's ``library_dirs``, paths inside ``toolchain_root``, give absolute entries. Other
    existing entries are build-time locations and are dropped. Every soname found nowhere is
    collected over all files, and unless ``ignore_missing`` (fnmatch globs on the soname)
    covers it, reported in one MissingLibrariesError.
    """
    closure = Path(os.path.realpath(closure))
    elf_files, by_name = _walk(closure)
    finder = _Finder(closure, toolchain_root, library_dirs, by_name)
    edits: list[ElfEdit] = []
    resolved: list[Resolution] = []
    missing: list[MissingLibrary] = []
    for path in elf_files:
        info = read_elf(path)
        runpath, found, lost = _plan_file(info, finder)
        if runpath != info.runpath:
            edits.append(ElfEdit(path=path, old_runpath=info.runpath, new_runpath=runpath))
        resolved += found
        for soname, wrong in lost:
            pattern = next((p for p in ignore_missing if fnmatch.fnmatchcase(soname, p)), None)
            if pattern is not None:
                where = f"missing; ignored by [assemble] ignore-missing {pattern!r}"
                resolved.append(Resolution(path, soname, where))
            else:
                rel = PurePosixPath(path.relative_to(closure).as_posix())
                missing.append(MissingLibrary(file=rel, soname=soname, other_arch=wrong))
    if missing:
        raise MissingLibrariesError(missing)
    return PatchPlan(closure=closure, edits=tuple(edits), resolved=tuple(resolved))


def _plan_file(info: ElfInfo, finder: _Finder) -> tuple[
        tuple[str, ...], list[Resolution], list[tuple[str, tuple[str, ...]]]]:
    """One file's new run path, its resolutions, and its (soname, wrong-arch) misses."""
    origin = info.path.parent
    # Closure entries (kept, then added) come before toolchain ones, as the loader searches
    # in order; each soname is looked up in the entries already chosen first, so what we
    # report is what the loader will pick.
    closure_dirs: dict[str, Path] = {}
    for entry in info.runpath:
        folder = finder.origin_dir(entry, origin)
        if folder is not None:
            closure_dirs.setdefault(entry, folder)
    toolchain_dirs: list[PurePosixPath] = []
    found: list[Resolution] = []
    lost: list[tuple[str, tuple[str, ...]]] = []
    for soname in dict.fromkeys(info.needed):
        if soname in LIBC_FAMILY or "/" in soname:  # a path in DT_NEEDED is not searched
            found.append(Resolution(info.path, soname, LIBC_WHERE if "/" not in soname
                                    else "a path: not searched"))
            continue
        wrong: list[str] = []
        where = _in_closure(soname, info, finder, closure_dirs, wrong)
        if where is None:
            where = _in_toolchain(soname, info.arch, finder, toolchain_dirs, wrong)
        if where is None:
            lost.append((soname, tuple(dict.fromkeys(wrong))))
        else:
            found.append(Resolution(info.path, soname, where))
    return (*closure_dirs, *map(str, toolchain_dirs)), found, lost


def _in_closure(soname: str, info: ElfInfo, finder: _Finder, chosen: dict[str, Path],
                wrong: list[str]) -> str | None:
    """The closure entry providing ``soname``, added to ``chosen`` if new; None if none."""
    for entry, folder in chosen.items():
        if finder.in_closure(folder / soname, info.arch, wrong):
            return entry
    origin = info.path.parent
    candidates = sorted(finder.by_name.get(soname, ()), key=lambda p: p.parent != origin)
    for candidate in candidates:
        if candidate != info.path and finder.in_closure(candidate, info.arch, wrong):
            rel = os.path.relpath(candidate.parent, origin)
            entry = "$ORIGIN" if rel == "." else f"$ORIGIN/{PurePosixPath(rel).as_posix()}"
            chosen.setdefault(entry, candidate.parent)
            return entry
    return None


def _in_toolchain(soname: str, want: Arch, finder: _Finder,
                  chosen: list[PurePosixPath], wrong: list[str]) -> str | None:
    """The library dir (inside the toolchain root) providing ``soname``; None if none."""
    for folder in [*chosen, *(d for d in finder.library_dirs if d not in chosen)]:
        host = resolve_in_root(finder.root, folder / soname)
        if finder.accepts(host, f"{folder / soname} in the toolchain", want, wrong):
            if folder not in chosen:
                chosen.append(folder)
            return str(folder)
    return None


def _walk(closure: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """ELF regular files (sorted, symlinks never followed) and every entry by file name."""
    elf_files: list[Path] = []
    by_name: dict[str, list[Path]] = {}
    for path, is_link in _entries(closure):
        by_name.setdefault(path.name, []).append(path)
        if not is_link and is_elf(path):
            elf_files.append(path)
    return elf_files, by_name


def _entries(folder: Path) -> Iterator[tuple[Path, bool]]:
    """(path, is symlink) of every regular file and symlink under ``folder``, sorted."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_symlink():
            yield Path(entry.path), True
        elif entry.is_dir(follow_symlinks=False):
            yield from _entries(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path), False


def apply_plan(plan: PatchPlan, *, patchelf: str) -> int:
    """Apply every edit, one patchelf call per file; return how many files were edited.

    patchelf writes DT_RUNPATH (it turns a DT_RPATH into one unless ``--force-rpath``). A
    read-only file (a copy from the store) is made writable for the edit only.
    """
    for edit in plan.edits:
        rpath = ":".join(edit.new_runpath)
        action = ["--set-rpath", rpath] if rpath else ["--remove-rpath"]
        with _writable(edit.path):
            process.run([patchelf, *action, str(edit.path)],
                        what=f"patchelf on {edit.path.relative_to(plan.closure)}")
    return len(plan.edits)


@contextmanager
def _writable(path: Path) -> Iterator[None]:
    """Let the owner write ``path`` inside the block; its mode is restored afterwards."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    os.chmod(path, mode | stat.S_IWUSR)
    try:
        yield
    finally:
        os.chmod(path, mode)
