"""The runtime closure: what a built closure needs from its toolchain root at run time.

A closure runs with the toolchain root as ``/`` and itself at ``/venvseal/store/<name>``. A
container image needs only part of that root, and this module lists it, read-only (analysis
first; the image writer acts on the result). What comes in, and the reason each file shows
in ``venvseal closure``:

- ``interpreter``: the file ``bin/python`` points at, with its symlinks; ``dynamic loader``;
  the ``merged /usr`` top-level links (``/bin``, ``/lib``, ...);
- ``stdlib``: the folders on the interpreter's own ``sys.path`` (asked of it in the sandbox,
  with ``-I -S``), less :data:`STDLIB_SKIP`;
- ``library of X``: every shared library the toolchain's dynamic loader loads for the
  interpreter, the scripts' interpreters, the closure's ELF files and everything below
  (``LD_TRACE_LOADED_OBJECTS``, as ``ldd`` does);
- ``package P of X``: the runtime files of the Debian package that owns a library or a file
  the checks opened (plugin folders, data files; oci/dpkg.py), when the root has a dpkg
  database;
- ``opened by verify.commands[N]`` / ``verify.imports``: toolchain files the ``[verify]``
  checks opened or ran, traced with strace when the closure was built (toolchain/trace.py);
- ``dlopen note of X``: libraries an ELF ``.note.dlopen`` names (elf/dlopen.py);
- ``loaded by name in F``: libraries Python code loads with ctypes or cffi (oci/byname.py);
- ``include``: ``[image] include`` paths, whole, the one way to add any other host file;
- ``etc``: a minimal ``/etc`` (passwd, group, nsswitch.conf, ld.so.cache) and ``locale``.

A symlink of the closure (or of a store path it references) is followed only into the
toolchain's own program and library folders, and only to a file (issue 13: a fetched git
tree's ``leak -> /etc/shadow`` never brings the host's file along); what is not followed is
said in :attr:`RuntimeClosure.notes`. Nothing private to the host enters (rootfs.py).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from venvseal.elf.buildid import ELF_MAGIC
from venvseal.elf.loadercheck import DEFAULT_LOADER
from venvseal.oci.expand import Expander
from venvseal.oci.rootfs import (
    PARENT,
    ROOT,
    ClosureError,
    ImageConfigError,
    PrivateFileError,
    RootCollector,
    RuntimeClosure,
    RuntimeFile,
)
from venvseal.oci.shebang import SHEBANG_MAX, Shebang, parse_shebang
from venvseal.recipe.model import Recipe
from venvseal.store.core import STORE_DIR
from venvseal.toolchain.resolve import ResolvedToolchain, resolve_in_root
from venvseal.toolchain.sandbox import ROOT_ENTRIES, Mount, Sandbox, SandboxSpec, fixed_env

__all__ = ["ClosureError", "ImageConfigError", "PrivateFileError", "RootCollector",
           "RuntimeClosure", "RuntimeFile", "Shebang", "parse_shebang", "root_size",
           "runtime_closure", "stdlib_skip"]

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
# Where the loader looks after DT_RUNPATH and ld.so.cache (glibc's trusted folders, x86_64).
LIBRARY_DIRS = tuple(PurePosixPath(p) for p in (
    "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib",
    "/usr/lib"))
SCRIPT_DEPTH = 4  # nested script interpreters followed (the kernel allows only a few)

_SYS_PATH = "import sys; print('\\n'.join(p for p in sys.path if p))"
_TRACED_WHY = ("stdlib", "include", "symlink target of ")


def stdlib_skip(rel: PurePosixPath, is_dir: bool) -> bool:
    """Whether an entry of a standard library folder is left out (see STDLIB_SKIP)."""
    if not is_dir:
        return rel.suffix == ".pyc"
    if rel.name == "__pycache__":
        return True
    return len(rel.parts) == 1 and any(fnmatch.fnmatchcase(rel.name, p) for p in STDLIB_SKIP)


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
        if real is None or c.kind_of(real) != "file":
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
    own = _scan(paths[0])
    python, loader = _add_interpreter(c, tc, dict(own.links).get("bin/python", tc.python))
    # The interpreter is asked in the sandbox (a subprocess) while the references (the
    # relinked deps: thousands of files) are scanned.
    with ThreadPoolExecutor(1, thread_name_prefix="stdlib") as pool:
        asked = pool.submit(runner.run, spec, [str(python), "-I", "-S", "-c", _SYS_PATH],
                            what=f"{python}: where its standard library is")
        scans = [(STORE_DIR / paths[0].name, own),
                 *((STORE_DIR / p.name, _scan(p)) for p in paths[1:])]
        stdlib = asked.result().output
    folders = [f for f in map(PurePosixPath, stdlib.splitlines()) if f.is_absolute()]
    for folder in folders:  # the zip of the standard library is usually absent
        c.add_tree(folder, "stdlib", stdlib_skip)
    trees = _trees(c, [*tc.path, *tc.library_dirs, *LIBRARY_DIRS, *folders])
    linked, notes = _linked_programs(c, tc, scans, trees, python)
    programs = [python, *linked]
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
    expander = Expander(c, runner=runner, spec=spec, loader=loader,
                        search=[*tc.library_dirs, *LIBRARY_DIRS])
    notes += expander.run(traced, closures=paths,
                          elf={p: found.elf for p, (_, found) in zip(paths, scans, strict=True)})
    _add_etc(c, rec)
    c.add_tree(LOCALE, "locale")
    return c.result(tuple(notes), path=_image_path(c, tc))


def _linked_programs(c: RootCollector, tc: ResolvedToolchain,
                     scans: Sequence[tuple[PurePosixPath, _Scan]], trees: Sequence[PurePosixPath],
                     python: PurePosixPath) -> tuple[list[PurePosixPath], list[str]]:
    """Record what the store paths' symlinks and scripts need; the ELF programs to trace,
    and notes on the symlinks not followed (only a file in the toolchain's trees is)."""
    programs: list[PurePosixPath] = []
    notes: list[str] = []
    for top, found in scans:
        prefix = "" if top == scans[0][0] else f"{top.name}/"
        for rel, target in found.links:
            if _within(c, target, trees, python):
                programs += _programs(c, tc, Shebang(target), f"symlink target of {prefix}{rel}")
            else:
                notes.append(f"{top.name}/{rel}: its symlink to {target} is not followed (it "
                             "leads outside the toolchain's program and library folders); "
                             "name the target in [image] include if the app needs it")
        for rel, shebang in found.scripts:
            programs += _programs(c, tc, shebang, f"script interpreter of {prefix}{rel}")
    return programs, notes


def _trees(c: RootCollector, folders: Sequence[PurePosixPath]) -> list[PurePosixPath]:
    """The toolchain's program and library folders, symlink-free."""
    found = (c.resolve(f) for f in folders)
    return sorted({f for f in found if f is not None and f != ROOT})


def _within(c: RootCollector, target: PurePosixPath, trees: Sequence[PurePosixPath],
            python: PurePosixPath) -> bool:
    """Whether a store path's symlink to ``target`` leads to a file in ``trees``."""
    try:
        real = c.resolve(target)
    except ClosureError:
        return False
    if real is None or real == ROOT:
        return False
    if not stat.S_ISREG(os.lstat(c.host(real)).st_mode):
        return False
    return real == python or any(real.is_relative_to(t) for t in trees)


def _image_path(c: RootCollector, tc: ResolvedToolchain) -> tuple[PurePosixPath, ...]:
    """The ``toolchain.path`` folders the image has (with something in them)."""
    kept = []
    for folder in tc.path:
        real = c.resolve(folder)
        if real is not None and c.kind_of(real) == "dir" and any(
                p.parent == real and f.why != PARENT for p, f in c.entries.items()):
            c.resolve(folder, record="PATH")  # its symlinks, so it resolves in the image
            kept.append(folder)
    return tuple(kept)


def _add_interpreter(c: RootCollector, tc: ResolvedToolchain,
                     link: PurePosixPath) -> tuple[PurePosixPath, PurePosixPath]:
    """The interpreter (and its loader, and the merged-/usr links): its path and its loader."""
    python = c.add_path(link, "interpreter")
    if python is None or c.kind_of(python) != "file":
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
        if real is None or c.kind_of(real) != "file":
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
