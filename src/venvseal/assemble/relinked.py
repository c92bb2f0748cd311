"""The relinked deps: the pinned venv made runnable on one toolchain, shared by its closures.

The deps stage's output is pinned by its hash, so it stays as uv left it (normalised): its
ELF files keep their wheel's run paths and it has no bytecode. This stage derives a store
path from it, offline, once per deps path and toolchain:

1. the venv is copied (without the build environment): copies, not hard links, so the two
   paths share no inode;
2. every ELF file is relinked against the toolchain (auto-patchelf, :mod:`venvseal.elf`);
3. every module's bytecode is compiled. The store is read-only, so Python could never write
   it at run time and would compile every imported module at every start. The pycs are
   checked-hash ones (PEP 552): valid whatever the files' times, and each the same bytes
   from every build;
4. the dynamic loader must resolve every ELF file (:mod:`venvseal.loadercheck`).

Closures link to it (:mod:`venvseal.forest`) rather than copying it, so an app edit reuses
it whole, and images ship it as one layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from venvseal import fsutil
from venvseal.deps.records import update_records
from venvseal.deps.stage import BUILD_ENV
from venvseal.elf import loadercheck
from venvseal.elf.buildid import find_elf_files
from venvseal.elf.tool import patchelf_version
from venvseal.errors import CommandError, VenvsealError
from venvseal.store.core import StorePath
from venvseal.toolchain import sandbox
from venvseal.toolchain.resolve import ResolvedToolchain
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

STAGE_VERSION = "relinked-3"  # bump whenever the same inputs would give other bytes
# Compiles every .py file that is a regular file in a real folder under each argument,
# in sorted order; a file that is not valid Python for this interpreter (a template, a
# test for another version) is left without bytecode, as installers do. Prints the counts.
# With "-jN" first, N forked workers take the files, largest first, from a pipe of 4-byte
# indices (reads of PIPE_BUF or less are atomic: each index goes to one worker). fork: no
# semaphores, which the sandbox's /dev may lack, and no re-import per worker. A pyc's bytes
# depend on its source, path and interpreter only, never on which process wrote it (tested).
COMPILER = """\
import os, py_compile, struct, sys
args = sys.argv[1:]
jobs = int(args.pop(0)[2:]) if args and args[0].startswith("-j") else 1
mode = py_compile.PycInvalidationMode.CHECKED_HASH
todo = []
for top in args:
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs
                         if d != "__pycache__" and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.endswith(".py") and not os.path.islink(path):
                todo.append(path)

def compile_one(path):
    try:
        py_compile.compile(path, doraise=True, invalidation_mode=mode)
        return 1, 0
    except (py_compile.PyCompileError, SyntaxError, ValueError, UnicodeError):
        return 0, 1

jobs = max(1, min(jobs, len(todo) // 32))  # a few files are not worth a fork
if jobs == 1:
    results = [compile_one(path) for path in todo]
    done, failed = sum(r[0] for r in results), sum(r[1] for r in results)
else:
    order = sorted(range(len(todo)), key=lambda i: -os.path.getsize(todo[i]))
    tasks_r, tasks_w = os.pipe()
    workers = []
    for k in range(jobs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(tasks_w)
            status = 1
            try:
                counts = [0, 0]
                while True:
                    index = os.read(tasks_r, 4)
                    if not index:
                        break
                    d, f = compile_one(todo[struct.unpack("<I", index)[0]])
                    counts[0] += d
                    counts[1] += f
                os.write(w, ("%d %d" % tuple(counts)).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(w)
        workers.append((pid, r))
    os.close(tasks_r)
    for start in range(0, len(order), 1024):  # 4 KiB a write: atomic, whole indices
        os.write(tasks_w, struct.pack("<%dI" % len(order[start:start + 1024]),
                                      *order[start:start + 1024]))
    os.close(tasks_w)
    done = failed = 0
    for pid, r in workers:
        with os.fdopen(r, "rb") as f:
            counts = f.read().split()
        _, status = os.waitpid(pid, 0)
        if status != 0 or len(counts) != 2:
            sys.exit("a bytecode compiler worker failed (status %d)" % status)
        done += int(counts[0])
        failed += int(counts[1])
print(done, failed)
"""


class RelinkError(VenvsealError):
    """The loader cannot resolve some ELF file, or the interpreter cannot compile bytecode."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RelinkInputs:
    """What the relinked deps depend on; ``fingerprint`` names its store path."""

    deps: StorePath
    toolchain: ResolvedToolchain
    ignore_missing: tuple[str, ...]
    # The relinked bytes depend on patchelf's release (the host's, or venvseal's own).
    patchelf: str = field(default_factory=patchelf_version)

    def fingerprint(self) -> str:
        tc = self.toolchain
        doc = {
            "stage": STAGE_VERSION,
            "deps": self.deps.name,
            "patchelf": self.patchelf,
            "toolchain": [tc.identity, str(tc.python), [str(d) for d in tc.library_dirs],
                          [str(p) for p in tc.path]],
            "ignore-missing": list(self.ignore_missing),
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class Relinked:
    """What making the relinked deps did."""

    edited: int  # ELF files whose run path changed
    elf_files: int
    compiled: int  # modules with bytecode
    not_compiled: int  # .py files that are not valid Python for the toolchain


def relink(tree: Path, tc: ResolvedToolchain, ignore_missing: Sequence[str], *,
           edit: Callable[[Path], Path]) -> set[Path]:
    """auto-patchelf every ELF file under ``tree``; ``edit(path)`` makes a file writable
    first. Returns the files changed."""
    from venvseal.elf import patchelf as elf  # pyelftools: imported only when something is relinked
    from venvseal.elf.tool import locate_patchelf

    plan = elf.plan_patchelf(tree, toolchain_root=tc.root, library_dirs=tc.library_dirs,
                             ignore_missing=ignore_missing)
    for change in plan.edits:
        edit(change.path)
    if plan.edits:  # an app without ELF files of its own needs no patchelf
        elf.apply_plan(plan, patchelf=locate_patchelf())
    return {change.path for change in plan.edits}


def compile_bytecode(folders: Sequence[PurePosixPath], *, python: PurePosixPath, what: str,
                     runner: Sandbox, spec: SandboxSpec,
                     jobs: int | None = None) -> tuple[int, int]:
    """Compile the modules under ``folders`` (paths in the sandbox) of the store path named
    ``what`` with ``jobs`` processes (default: one per core); (compiled, not Python for this
    interpreter). The bytes are the same for any number of jobs."""
    jobs = jobs or len(os.sched_getaffinity(0))
    argv = [str(python), "-I", "-c", COMPILER, f"-j{jobs}", *map(str, folders)]
    try:
        done = runner.run(spec, argv, what="compiling bytecode")
    except CommandError as err:  # a file that does not compile is counted, not raised
        raise RelinkError(f"compiling the bytecode of {what} failed: the interpreter {python} "
                          "itself failed; check that [toolchain] python runs in the "
                          f"toolchain root:\n{err.output_tail}") from err
    compiled, failed = done.output.split()[-2:]
    return int(compiled), int(failed)


def check_loader(tree: Path, logical: PurePosixPath, ignore_missing: Sequence[str], *,
                 runner: Sandbox, spec: SandboxSpec) -> int:
    """Every ELF file under ``tree`` (seen at ``logical``) resolves; how many there are."""
    files = [logical / p.relative_to(tree).as_posix() for p in find_elf_files(tree)]
    report = loadercheck.unresolved_lines(files, ignore_missing, runner=runner, spec=spec)
    if report is not None:
        raise RelinkError(f"relinking the dependencies: {report}")
    return len(files)


def _writable(path: Path) -> Path:
    """Give the owner write permission on ``path``, a private copy, before patchelf edits it."""
    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o200)
    return path


def make(inputs: RelinkInputs, out: Path, *, logical: PurePosixPath, runner: Sandbox) -> Relinked:
    """Build the relinked deps into ``out`` (created here), to run at ``logical``."""
    # Copies, not hard links: the deps path and this one share no inode, so repairing or
    # chmod-ing one can never change the other (issue 13.8; the cost is in the README).
    fsutil.clone_tree(inputs.deps, out, skip=(BUILD_ENV,))
    edited = relink(out, inputs.toolchain, inputs.ignore_missing, edit=_writable)
    update_records(out, (), edited)
    env = sandbox.fixed_env(inputs.toolchain.path)
    spec = SandboxSpec(root=inputs.toolchain.root, env=env, network=False,
                       mounts=(Mount(host=out, target=logical, writable=True),),
                       cwd=sandbox.BUILD_ROOT)
    # Modules are compiled, not the scripts distributions ship in bin/ (deps/scripts.py): a
    # script runs as __main__, whose bytecode Python never reads, as installers leave it.
    folders = [logical / name for name in sorted(os.listdir(out))
               if name != "bin" and stat.S_ISDIR(os.lstat(out / name).st_mode)]
    compiled, failed = compile_bytecode(folders, python=inputs.toolchain.python,
                                        what=logical.name, runner=runner, spec=spec)
    elf_files = check_loader(out, logical, inputs.ignore_missing, runner=runner, spec=spec)
    return Relinked(edited=len(edited), elf_files=elf_files, compiled=compiled,
                    not_compiled=failed)
