"""Ask the toolchain's own dynamic loader, inside the sandbox, what it cannot find.

This checks the result of :mod:`venvseal.elf` with the real thing rather than with our model
of it. The loader is run the way ``ldd`` runs it (glibc elf/ldd.bash.in): ``--verify`` first,
to tell dynamic objects from the rest, then with ``LD_TRACE_LOADED_OBJECTS=1``, which lists
every dependency and prints ``NAME => not found`` for each one it cannot load. (``ld.so
--list`` stops at the first missing library instead, at least in glibc 2.36.)
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from venvseal.errors import VenvsealError
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec

DEFAULT_LOADER = PurePosixPath("/lib64/ld-linux-x86-64.so.2")
# Files per sandbox call: one call for a typical closure, and far below the kernel's
# limit on the total size of a command line (ARG_MAX, 2 MiB by default on Linux).
BATCH = 2000
FILE_MARK = "@@venvseal-loader-trace-file@@"
END_MARK = "@@venvseal-loader-trace-end@@"
_FILE, _END = FILE_MARK, END_MARK
# $1 is the loader, the rest are files. --verify exits 0 (dynamic executable), 2 (shared
# object) or 1 (static, not ELF, or not for this loader); only 0 and 2 can be traced.
_SCRIPT = f"""loader=$1; shift
for f in "$@"; do
  printf '%s %s\\n' '{_FILE}' "$f"
  if [ ! -e "$f" ]; then printf '%s missing\\n' '{_END}'; continue; fi
  "$loader" --verify "$f" >/dev/null 2>&1
  case $? in
    0|2) LD_TRACE_LOADED_OBJECTS=1 "$loader" "$f" 2>&1; printf '%s %s\\n' '{_END}' "$?";;
    *) printf '%s not-dynamic\\n' '{_END}';;
  esac
done
"""
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found\s*$")
# "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "\t/lib64/ld-linux... (0x...)"
_LOADED = re.compile(r"^\s*(?:\S+ => )?(.+?) \(0x[0-9a-fA-F]+\)\s*$")


@dataclass(frozen=True, slots=True)
class Trace:
    """What the loader loads for one file: resolved paths, and sonames it cannot find."""

    libraries: tuple[PurePosixPath, ...] = ()
    missing: tuple[str, ...] = ()


class LoaderCheckError(VenvsealError):
    """The loader could not inspect a file at all (it is missing, or the loader failed)."""

    def __init__(self, file: PurePosixPath, problem: str) -> None:
        self.file = file
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"dynamic loader check of {self.file} failed: {self.problem}; check that the "
                "closure is mounted at that path and that the toolchain has the loader")


def trace(files: Sequence[PurePosixPath], *, runner: Sandbox, spec: SandboxSpec,
          loader: PurePosixPath = DEFAULT_LOADER) -> dict[PurePosixPath, Trace]:
    """For each file (a path inside the sandbox), what the toolchain's loader loads for it.

    Files the loader does not take as dynamic objects (static executables, but also files
    for another architecture) get an empty trace. The caller mounts the files in ``spec``.
    """
    result: dict[PurePosixPath, Trace] = {}
    for start in range(0, len(files), BATCH):
        batch = files[start:start + BATCH]
        argv = ["/bin/sh", "-c", _SCRIPT, "sh", str(loader), *map(str, batch)]
        done = runner.run(spec, argv, what=f"dynamic loader trace with {loader}")
        result.update(parse_trace(done.output, batch))
    return result


def loader_check(files: Sequence[PurePosixPath], *, runner: Sandbox, spec: SandboxSpec,
                 loader: PurePosixPath = DEFAULT_LOADER) -> dict[PurePosixPath, list[str]]:
    """For each file (a path inside the sandbox), the sonames the loader reports not found.

    An empty list means every dependency loads (see :func:`trace` for what counts).
    """
    traced = trace(files, runner=runner, spec=spec, loader=loader)
    return {file: list(t.missing) for file, t in traced.items()}


def unresolved_lines(files: Sequence[PurePosixPath], ignored: Sequence[str], *,
                     runner: Sandbox, spec: SandboxSpec) -> str | None:
    """``loader_check``, less the sonames ``ignored`` (fnmatch globs) allows: one line per
    file with what stays unresolved, or None if everything resolves."""
    unresolved = loader_check(files, runner=runner, spec=spec) if files else {}
    missing = {f: kept for f, libs in unresolved.items()
               if (kept := [lib for lib in libs
                            if not any(fnmatch.fnmatchcase(lib, p) for p in ignored)])}
    if not missing:
        return None
    return "\n".join(f"  {f} -> {', '.join(libs)}" for f, libs in sorted(missing.items()))


def parse_trace(output: str, files: Sequence[PurePosixPath]) -> dict[PurePosixPath, Trace]:
    """Split the loop's output per file into loaded paths and ``not found`` sonames."""
    result: dict[PurePosixPath, Trace] = {}
    sections = output.split(f"{_FILE} ")[1:]
    if len(sections) != len(files):
        raise LoaderCheckError(files[len(sections) - 1 if sections else 0],
                               f"unexpected output from the dynamic loader's trace of "
                               f"{len(files)} files:\n{output[-2000:]}")
    for file, section in zip(files, sections, strict=True):
        body, _, status = section.rpartition(f"{_END} ")
        status = status.strip()
        lines = body.splitlines()[1:]  # the first line is the file name
        missing = tuple(dict.fromkeys(m[1] for line in lines if (m := _NOT_FOUND.match(line))))
        if status == "missing":
            raise LoaderCheckError(file, "no such file inside the sandbox")
        if status not in ("0", "not-dynamic") and not missing:
            raise LoaderCheckError(file, f"the dynamic loader failed on {file} (exit {status}):"
                                   "\n" + "\n".join(lines[-10:]))
        loaded = (PurePosixPath(m[1]) for line in lines if (m := _LOADED.match(line)))
        result[file] = Trace(tuple(dict.fromkeys(p for p in loaded if p.is_absolute())), missing)
    return result
