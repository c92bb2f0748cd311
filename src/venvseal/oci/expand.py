"""What the dynamic loader's view misses: libraries and data a closure loads at run time.

Starting from the files whose ``DT_NEEDED`` libraries are traced (runtime.py), the closure
grows until nothing new comes in, each round tracing the new ELF files with the loader:

- every library brings the runtime files of the Debian package that owns it (dpkg.py);
- every library's ELF ``.note.dlopen`` names more (elf/dlopen.py);
- the files the ``[verify]`` checks opened when the closure was built (toolchain/trace.py)
  come in, with their packages;
- so do libraries that the closure's Python code loads by name (byname.py); one the
  toolchain does not have is a note naming ``[image] include``.

Files that come in this way are never required: one that others may not read on the host is
left out with a note, where an explicitly wanted one is an error (rootfs.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from venvseal.elf.dlopen import dlopen_notes
from venvseal.elf.loadercheck import LoaderCheckError, Trace
from venvseal.elf.loadercheck import trace as trace_libraries
from venvseal.oci import byname, dpkg
from venvseal.oci.rootfs import ROOT, ClosureError, RootCollector
from venvseal.store.core import STORE_DIR
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec
from venvseal.toolchain.trace import read_record

ELF_MAGIC = b"\x7fELF"
MAX_ROUNDS = 20  # each round adds what the previous one's new files load; a few suffice
MIN_SLICE = 8  # files per sandboxed loader run, at least: fewer are not worth a sandbox


class Expander:
    """Grows a :class:`RootCollector` from the files to trace to a fixed point."""

    def __init__(self, c: RootCollector, *, runner: Sandbox, spec: SandboxSpec,
                 loader: PurePosixPath, search: Sequence[PurePosixPath]) -> None:
        self.c, self.runner, self.spec, self.loader = c, runner, spec, loader
        self.search = [(d, c.host(r)) for d in dict.fromkeys(search)
                       if (r := self._resolve(d)) is not None]
        self.notes: list[str] = []
        # Read while the loader traces the first files (a subprocess): the two overlap.
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="dpkg-db")
        self._db = self._db_pool.submit(dpkg.read_db, c.root)
        self._packages: set[str] = set()
        self._traced: set[PurePosixPath] = set()
        self._stores: dict[PurePosixPath, Path] = {}

    def run(self, traced: dict[PurePosixPath, str], *, closures: Sequence[Path],
            elf: Mapping[Path, Sequence[str]]) -> list[str]:
        """Trace ``traced`` (file -> reason for its libraries) and everything that follows;
        the notes. ``closures``: the closure's host path first, then its references;
        ``elf``: each one's ELF files (relative paths)."""
        try:
            return self._run(traced, closures=closures, elf=elf)
        finally:
            self._db_pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, traced: dict[PurePosixPath, str], *, closures: Sequence[Path],
             elf: Mapping[Path, Sequence[str]]) -> list[str]:
        pending = dict(traced)
        self._stores = {STORE_DIR / p.name: p for p in closures}
        for file in traced:  # the closure's own ELF files may carry dlopen notes too
            if file.is_relative_to(STORE_DIR):
                self._dlopen(file, pending)
        # The loader's view first, so its reasons stick for what the checks opened too.
        libraries = self._trace(pending)
        pending = {}
        sources = self._opened(closures[0], pending) + self._by_name(closures, elf, pending)
        for _ in range(MAX_ROUNDS):
            for library in dict.fromkeys([*libraries, *sources]):
                self._dlopen(library, pending)
                self._package(library, pending)
            sources = []
            if not pending:
                break
            libraries = self._trace(pending)
            pending = {}
        return self.notes

    def _resolve(self, path: PurePosixPath) -> PurePosixPath | None:
        try:
            real = self.c.resolve(path)
        except ClosureError:
            return None
        return None if real == ROOT else real

    def _add(self, path: PurePosixPath, why: str, pending: dict[PurePosixPath, str],
             *, only_new: bool = False) -> bool:
        """Add a file that is wanted but not required; queue it for tracing if it is ELF."""
        real = self._resolve(path)
        if real is None or (only_new and real in self.c.entries):
            return False
        st = os.lstat(self.c.host(real))
        if not stat.S_ISREG(st.st_mode):
            return False
        if not st.st_mode & stat.S_IROTH:
            self.notes.append(f"{path} ({why}) is left out: others may not read it on the host")
            return False
        self.c.add_path(path, why)
        if real not in self._traced and _is_elf(self.c.host(real)):
            pending.setdefault(real, f"library of {real}")
        return True

    def _trace(self, pending: dict[PurePosixPath, str]) -> list[PurePosixPath]:
        files = [f for f in pending if f not in self._traced]
        self._traced.update(files)
        if not files:
            return []
        try:
            traces = self._trace_on_every_core(files)
        except LoaderCheckError as err:
            self.notes.append(f"libraries of {len(files)} files not traced: {err}")
            return []
        found: list[PurePosixPath] = []
        for file, trace in traces.items():
            for library in trace.libraries:
                if not library.is_relative_to(STORE_DIR):
                    self.c.add_path(library, pending[file])
                    found.append(library)
        return found

    def _trace_on_every_core(self, files: list[PurePosixPath]) -> dict[PurePosixPath, Trace]:
        """:func:`trace_libraries` of ``files`` cut into one run of files per core, each in a
        sandbox of its own (the loader runs once per file); the traces in the files' order,
        and the first failing run's error, as one run would give them."""
        cores = min(len(os.sched_getaffinity(0)), len(files) // MIN_SLICE)
        if cores <= 1:
            return trace_libraries(files, runner=self.runner, spec=self.spec,
                                   loader=self.loader)
        size = -(-len(files) // cores)
        with ThreadPoolExecutor(cores, thread_name_prefix="trace") as pool:
            runs = [pool.submit(trace_libraries, files[i:i + size], runner=self.runner,
                                spec=self.spec, loader=self.loader)
                    for i in range(0, len(files), size)]
            traces = [run.result() for run in runs]
        return {file: t for found in traces for file, t in found.items()}

    def _db_of_root(self) -> dpkg.PackageDb | None:
        return self._db.result()

    def _package(self, library: PurePosixPath, pending: dict[PurePosixPath, str]) -> None:
        db = self._db_of_root()
        if db is None:
            return
        owner = db.owner(library, self._resolve)
        if owner is None or owner in self._packages:
            return
        self._packages.add(owner)
        for path in db.runtime_files(owner):
            self._add(path, f"package {owner} of {library}", pending)

    def _host(self, file: PurePosixPath) -> Path | None:
        """Where a file of the root or of a mounted store path is on the host."""
        if file.is_relative_to(STORE_DIR):
            top = STORE_DIR / file.relative_to(STORE_DIR).parts[0]
            return self._stores[top] / file.relative_to(top) if top in self._stores else None
        real = self._resolve(file)
        return None if real is None else self.c.host(real)

    def _dlopen(self, library: PurePosixPath, pending: dict[PurePosixPath, str]) -> None:
        host = self._host(library)
        if host is None:
            return
        for entry in dlopen_notes(host):
            found = next((p for s in entry.sonames if (p := self._find(s)) is not None), None)
            if found is not None:
                self._add(found, f"dlopen note of {library}", pending)
            elif entry.priority == "required":
                self.notes.append(f"{library} may dlopen {' or '.join(entry.sonames)} "
                                  f"({entry.feature or 'no feature named'}), which the "
                                  "toolchain root does not have")

    def _find(self, name: str) -> PurePosixPath | None:
        return byname.find_in(self.search, name)

    def _opened(self, closure: Path, pending: dict[PurePosixPath, str]) -> list[PurePosixPath]:
        opened = read_record(closure)
        if opened is None:
            self.notes.append("the [verify] checks were not traced when this closure was "
                              "built (install strace and rebuild): files they open at run "
                              "time may be missing")
            return []
        added = []
        for path, check in opened.items():
            file = PurePosixPath(path)
            if file.suffix != ".pyc" and self._add(file, f"opened by {check}", pending,
                                                   only_new=True):
                added.append(file)
        return added

    def _by_name(self, closures: Sequence[Path], elf: Mapping[Path, Sequence[str]],
                 pending: dict[PurePosixPath, str]) -> list[PurePosixPath]:
        added = []
        for tree in closures:
            uses = byname.scan(tree) + byname.scan_elf(tree, list(elf.get(tree, ())))
            for use in uses:
                found = self._find(use.name)
                if found is None:
                    self.notes.append(
                        f"{tree.name}/{use.file} loads the library {use.name!r} by name, "
                        "and the toolchain root has none: if the app needs it, install it "
                        "in the root and name it in [image] include")
                elif self._add(found, f"loaded by name in {use.file}", pending):
                    added.append(found)
        return added


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(ELF_MAGIC)) == ELF_MAGIC
