"""The runtime closure: exactly what a built closure needs from its toolchain root at run time.

A closure runs with the toolchain root as ``/`` and itself at ``/venvseal/store/<name>``. A
container image needs only part of that root, and this module lists it, read-only (analysis
first; the image writer acts on the result):

- the interpreter ``bin/python`` points at, with the symlinks that lead to it, and its
  standard library: the folders on its own ``sys.path`` (asked of the interpreter itself,
  in the sandbox, with ``-I -S``: on Debian ``/usr/lib/python3.X`` and its ``lib-dynload``,
  never ``/usr/lib/python3/dist-packages``), less :data:`STDLIB_SKIP`;
- every shared library that the interpreter, the standard library's extension modules, the
  closure's ELF files and its scripts' interpreters load, transitively, as the toolchain's
  own dynamic loader resolves them in the sandbox (``LD_TRACE_LOADED_OBJECTS``, as ``ldd``
  does), and the loader itself;
- the merged-/usr top-level symlinks (``/bin``, ``/lib``, ...) the root has;
- ``[image] include`` folders, whole, and the libraries of the ELF files in them (a
  program a script runs, such as ``/usr/bin/dirname``, is named there);
- a minimal ``/etc``: passwd and group (generated when the root has none), nsswitch.conf,
  and ld.so.cache (so the loader resolves in the image exactly as it did in the root);
- the C.UTF-8 locale the sandbox runs everything with.

Every symlink met on the way to a file is kept as a symlink, with its target.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from venvseal.elf.buildid import ELF_MAGIC
from venvseal.elf.loadercheck import DEFAULT_LOADER
from venvseal.elf.loadercheck import trace as trace_libraries
from venvseal.errors import EXIT_USAGE, VenvsealError
from venvseal.recipe.model import Recipe
from venvseal.store.core import STORE_DIR
from venvseal.toolchain.resolve import MAX_LINKS, ResolvedToolchain, resolve_in_root
from venvseal.toolchain.sandbox import ROOT_ENTRIES, Mount, Sandbox, SandboxSpec, fixed_env

Kind = Literal["file", "dir", "symlink"]
Skip = Callable[[PurePosixPath, bool], bool]  # (path relative to the tree, is a folder)
PARENT = "parent"
ROOT = PurePosixPath("/")
ETC = PurePosixPath("/etc")
# Left out of the standard library: its own test suite and the Tk GUI (tkinter, IDLE,
# turtledemo), which a server never imports; config-3.X-<triplet>, the static libpython
# and Makefile for building extensions; the interpreter's own site-packages, which a venv
# with include-system-site-packages = false never sees; and bytecode. The sealed Debian
# roots set every mtime to 1, so Debian's timestamp-checked .pyc files are stale there and
# would be recompiled anyway (and in memory only: the image is read-only).
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "config-3.*", "site-packages",
               "dist-packages")
# Written when the root has no /etc/passwd or /etc/group, so [image] user "nobody" works.
DEFAULT_PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
                  b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
DEFAULT_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
ETC_FILES = ("nsswitch.conf", "ld.so.cache")
# The locale every build step and check runs with (sandbox.fixed_env: LANG=C.UTF-8); since
# glibc 2.35 it is a compiled locale in this folder, not built into libc.
LOCALE = PurePosixPath("/usr/lib/locale/C.utf8")
MERGED_USR = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
# Provided by the container runtime, never by the root: a symlink into them (/etc/mtab ->
# ../proc/self/mounts) is kept, and not followed into the host's own /proc.
VIRTUAL = ("dev", "proc", "run", "sys", "tmp")
SHEBANG_MAX = 256  # BINPRM_BUF_SIZE: the kernel reads no more of a script's first line
SCRIPT_DEPTH = 4  # nested script interpreters followed (the kernel allows only a few)


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SYS_PATH = "import sys; print('\\n'.join(p for p in sys.path if p))"
_TRACED_WHY = ("stdlib", "include", "symlink target of ")


class ClosureError(VenvsealError):
    """The runtime closure cannot be computed from this toolchain root."""


class ImageConfigError(ClosureError):
    """``[image]`` names something the toolchain root does not have (exit 2)."""

    exit_code = EXIT_USAGE


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
    """Every entry, sorted by path (parents first), each parent folder present, no duplicates."""

    files: tuple[RuntimeFile, ...]

    @property
    def size(self) -> int:
        """Total bytes of the regular files."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True, slots=True)
class Shebang:
    """A script's ``#!`` line: the interpreter and the rest, one argument as Linux passes it."""

    interpreter: PurePosixPath
    argument: str = ""

    @property
    def env_program(self) -> str | None:
        """For ``#!/usr/bin/env [-S] [-i] [NAME=VALUE...] PROGRAM``: PROGRAM, else None."""
        if self.interpreter.name != "env":
            return None
        words = iter(self.argument.split())
        for word in words:
            if word in ("-u", "--unset", "-C", "--chdir"):
                next(words, None)  # these take a value
            elif word.startswith("-S") and len(word) > 2:
                return word[2:]
            elif not word.startswith("-") and not _ASSIGNMENT.match(word):
                return word
        return None


def parse_shebang(head: bytes) -> Shebang | None:
    """The ``#!`` line at the start of ``head`` (a file's first bytes), or None."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:SHEBANG_MAX].split(b"\n", 1)[0].replace(b"\t", b" ").strip(b" \r")
    interpreter, _, argument = line.partition(b" ")
    if not interpreter:
        return None
    return Shebang(PurePosixPath(os.fsdecode(interpreter)), os.fsdecode(argument.strip(b" ")))


def stdlib_skip(rel: PurePosixPath, is_dir: bool) -> bool:
    """Whether an entry of a standard library folder is left out (see STDLIB_SKIP)."""
    if not is_dir:
        return rel.suffix == ".pyc"
    if rel.name == "__pycache__":
        return True
    return len(rel.parts) == 1 and any(fnmatch.fnmatchcase(rel.name, p) for p in STDLIB_SKIP)


class RootCollector:
    """Records entries of a root file system, as reached from its ``/``, with their reasons.

    Paths are resolved one component at a time, as the kernel would with the root as
    ``/``; every symlink met is recorded too, so the result resolves the same way. A first
    reason sticks, except that "parent" gives way to a real one.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[PurePosixPath, RuntimeFile] = {}
        self._walked: set[PurePosixPath] = set()

    def host(self, path: PurePosixPath) -> Path:
        """Where ``path`` (inside the root) is on the host, no symlink followed."""
        return self.root / str(path).lstrip("/")

    def record(self, path: PurePosixPath, why: str, content: bytes | None = None) -> None:
        """Add one entry (and its parent folders) unless it is there for a better reason."""
        old = self.entries.get(path)
        if old is not None and content is None and (old.why != PARENT or why == PARENT):
            return
        host = self.host(path)
        if content is not None:
            entry = RuntimeFile(path, host, "file", len(content), why, content)
        else:
            entry = RuntimeFile(path, host, *self._kind(path, why == PARENT), why)
        self.entries[path] = entry
        if path.parent != ROOT and path.parent not in self.entries:
            self.record(path.parent, PARENT)

    def _kind(self, path: PurePosixPath, parent: bool) -> tuple[Kind, int]:
        try:
            mode = os.lstat(self.host(path))
        except FileNotFoundError:
            if parent:  # the folder of a generated file, absent from the root
                return "dir", 0
            raise
        if stat.S_ISLNK(mode.st_mode):
            return "symlink", 0
        if stat.S_ISDIR(mode.st_mode):
            return "dir", 0
        if stat.S_ISREG(mode.st_mode):
            return "file", mode.st_size
        raise ClosureError(f"{path} in the toolchain root {self.root} is a device, socket or "
                           "pipe, which an image cannot hold; leave it out of [image] include")

    def add_path(self, path: PurePosixPath, why: str) -> PurePosixPath | None:
        """Record ``path`` and every symlink on the way; its symlink-free path, or None.

        None means the chain ends at nothing (a dangling symlink, whose links are still
        recorded). A folder is recorded alone, not its content (see :meth:`add_tree`).
        """
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
            host = self.host(here)
            if (current == ROOT and name in VIRTUAL) or not os.path.lexists(host):
                return None
            if not host.is_symlink():
                current = here
                continue
            self.record(here, why)
            hops += 1
            target = PurePosixPath(os.readlink(host))
            if hops > MAX_LINKS:
                raise ClosureError(f"{path} in the toolchain root {self.root}: too many "
                                   "levels of symlinks")
            via = f"symlink {here} -> {target}"
            todo = list(target.parts[1:] if target.is_absolute() else target.parts) + todo
            current = ROOT if target.is_absolute() else current
        if current != ROOT:
            self.record(current, why)
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

    def result(self) -> RuntimeClosure:
        """The entries so far, sorted by path components (so parents come first)."""
        return RuntimeClosure(tuple(sorted(self.entries.values(), key=lambda f: f.path.parts)))


@dataclass(frozen=True, slots=True)
class _Scan:
    """What the closure itself asks of the root: symlinks into it, ELF files, scripts."""

    links: tuple[tuple[str, PurePosixPath], ...]  # (closure-relative path, absolute target)
    elf: tuple[str, ...]
    scripts: tuple[tuple[str, Shebang], ...]


def _scan(closure: Path) -> _Scan:
    links: list[tuple[str, PurePosixPath]] = []
    elf: list[str] = []
    scripts: list[tuple[str, Shebang]] = []
    for rel, entry in _entries(closure, ""):
        if entry.is_symlink():
            target = PurePosixPath(os.readlink(entry.path))
            if target.is_absolute() and not target.is_relative_to(STORE_DIR):
                links.append((rel, target))
            continue
        with open(entry.path, "rb") as f:
            head = f.read(SHEBANG_MAX)
        if head.startswith(ELF_MAGIC):
            elf.append(rel)
        elif entry.stat().st_mode & 0o111 and (shebang := parse_shebang(head)) is not None:
            scripts.append((rel, shebang))
    return _Scan(tuple(links), tuple(elf), tuple(scripts))


def _entries(folder: str | Path, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative path, entry) of every regular file and symlink, sorted; links not followed."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(entry.path, rel + "/")
        elif entry.is_symlink() or entry.is_file(follow_symlinks=False):
            yield rel, entry


def _loader_of(file: Path) -> PurePosixPath | None:
    """PT_INTERP of the ELF file ``file``: the dynamic loader the kernel starts for it."""
    with file.open("rb") as f:
        for segment in ELFFile(f).iter_segments():
            if isinstance(segment, InterpSegment):
                return PurePosixPath(segment.get_interp_name())
    return None


def _programs(c: RootCollector, tc: ResolvedToolchain, shebang: Shebang, why: str,
              depth: int = 1) -> list[PurePosixPath]:
    """Record a script's interpreter (and env's program); the ELF programs to trace.

    An interpreter that is itself a script brings its own interpreter, as the kernel runs it.
    """
    wanted = [shebang.interpreter]
    name = shebang.env_program
    if name is not None and "/" in name:
        wanted.append(PurePosixPath(name))
    elif name is not None:
        found = (d / name for d in tc.path
                 if _is_program(resolve_in_root(tc.root, d / name)))
        wanted += [p for p in [next(found, None)] if p is not None]
    programs: list[PurePosixPath] = []
    for program in wanted:
        if not program.is_absolute() or program.is_relative_to(STORE_DIR):
            continue  # relative to the working folder, or in a store path: nothing to add
        real = c.add_path(program, why)
        if real is None or c.entries[real].kind != "file":
            continue
        with c.host(real).open("rb") as f:
            head = f.read(SHEBANG_MAX)
        nested = parse_shebang(head)
        if head.startswith(ELF_MAGIC):
            programs.append(real)
        elif nested is not None and depth < SCRIPT_DEPTH:
            programs += _programs(c, tc, nested, f"script interpreter of {real}", depth + 1)
    return programs


def runtime_closure(rec: Recipe, tc: ResolvedToolchain, closure: Path, *,
                    runner: Sandbox, references: Sequence[Path] = ()) -> RuntimeClosure:
    """Everything ``closure`` (a built store path) and the store paths it references (the
    relinked deps, fetched sources) need from ``tc``'s root at run time."""
    paths = [Path(os.path.realpath(p)) for p in (closure, *references)]
    spec = SandboxSpec(root=tc.root, env=fixed_env(tc.path),
                       mounts=tuple(Mount(host=p, target=STORE_DIR / p.name) for p in paths))
    c = RootCollector(tc.root)
    scans = [(STORE_DIR / p.name, _scan(p)) for p in paths]
    python, loader = _add_interpreter(c, tc, dict(scans[0][1].links).get("bin/python",
                                                                          tc.python))
    stdlib = runner.run(spec, [str(python), "-I", "-S", "-c", _SYS_PATH],
                        what=f"{python}: where its standard library is").output
    for folder in map(PurePosixPath, stdlib.splitlines()):
        if folder.is_absolute():  # the zip of the standard library is usually absent
            c.add_tree(folder, "stdlib", stdlib_skip)
    programs = [python]
    for _, found in scans:
        for rel, target in found.links:  # a folder is taken whole, a program with its libraries
            if c.add_tree(target, f"symlink target of {rel}"):
                programs += _programs(c, tc, Shebang(target), f"symlink target of {rel}")
        for rel, shebang in found.scripts:
            programs += _programs(c, tc, shebang, f"script interpreter of {rel}")
    for i, path in enumerate(rec.image.include):
        if not c.add_tree(path, "include"):
            raise ImageConfigError(f"{rec.file}: {rec.key_prefix}image.include[{i}]: {path} "
                                   f"does not exist in the toolchain root {tc.root}; install "
                                   "what provides it there, or remove it")
    # Programs first, then ELF files in the standard library, includes and folders the
    # closure links to, then the closure's own: a library shared by several is listed for
    # the first that loads it.
    traced = {p: f"library of {p}" for p in programs}
    traced |= {p: f"library of {p}" for p, f in sorted(c.entries.items())
               if f.kind == "file" and f.why.startswith(_TRACED_WHY) and _is_elf(f.host)}
    traced |= {top / rel: f"library of {rel}" for top, found in scans for rel in found.elf}
    for file, trace in trace_libraries(list(traced), runner=runner, spec=spec,
                                       loader=loader).items():
        for library in trace.libraries:
            if not library.is_relative_to(STORE_DIR):
                c.add_path(library, traced[file])
    _add_etc(c, rec)
    c.add_tree(LOCALE, "locale")
    return c.result()


def _add_interpreter(c: RootCollector, tc: ResolvedToolchain,
                     link: PurePosixPath) -> tuple[PurePosixPath, PurePosixPath]:
    """The interpreter (and its loader, and the merged-/usr links): its path and its loader."""
    python = c.add_path(link, "interpreter")
    if python is None or c.entries[python].kind != "file":
        raise ClosureError(f"the closure's interpreter {link} is not a file in the toolchain "
                           f"root {tc.root}; rebuild the closure with this toolchain")
    loader = (_is_elf(c.host(python)) and _loader_of(c.host(python))) or DEFAULT_LOADER
    c.add_path(loader, "dynamic loader")
    for name in MERGED_USR:
        if (tc.root / name).is_symlink():
            c.add_path(ROOT / name, "merged /usr")
    return python, loader


def _is_program(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(ELF_MAGIC)) == ELF_MAGIC


def _add_etc(c: RootCollector, rec: Recipe) -> None:
    """passwd and group (the root's, else defaults), and the /etc files the loader reads."""
    names: dict[str, set[str]] = {}
    for name, default in (("passwd", DEFAULT_PASSWD), ("group", DEFAULT_GROUP)):
        real = c.add_path(ETC / name, "etc")
        if real is None or c.entries[real].kind != "file":
            c.record(ETC / name, "etc (generated: the root has none)", default)
            data = default
        else:
            data = c.host(real).read_bytes()
        names[name] = {ln.split(b":", 1)[0].decode("utf-8", "replace")
                       for ln in data.splitlines() if b":" in ln}
    for name in ETC_FILES:
        c.add_path(ETC / name, "etc")
    if rec.image.user is None:
        return
    user, _, group = rec.image.user.partition(":")
    for value, what, table in ((user, "user", "passwd"), (group, "group", "group")):
        if value and not value.isdigit() and value not in names[table]:
            raise ImageConfigError(
                f"{rec.file}: {rec.key_prefix}image.user: {what} {value!r} is not in "
                f"/etc/{table} of the toolchain root {c.root}; use a numeric id, or add it "
                "to the root")


def root_size(root: Path) -> int:
    """Bytes of the regular files of ``root`` that the sandbox shows (hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    todo = [root / name for name in ROOT_ENTRIES
            if (root / name).is_dir() and not (root / name).is_symlink()]
    while todo:
        try:
            it = os.scandir(todo.pop())
        except OSError:  # a folder we may not read (the host's /etc/ssl/private)
            continue
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    todo.append(Path(entry.path))
                elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total
