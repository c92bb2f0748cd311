"""Ask the toolchain's own dynamic loader, inside the sandbox, what it cannot find.

This checks the result of :mod:`venvseal.elf` with the real thing rather than with our model
of it. The loader is run the way ``ldd`` runs it (glibc elf/ldd.bash.in): ``--verify`` first,
to tell dynamic objects from the rest, then with ``LD_TRACE_LOADED_OBJECTS=1``, which lists
every dependency and prints ``NAME => not found`` for each one it cannot load. (``ld.so
--list`` stops at the first missing library instead, at least in glibc 2.36.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

from venvseal.errors import VenvsealError
from venvseal.sandbox import Sandbox, SandboxSpec

DEFAULT_LOADER = PurePosixPath("/lib64/ld-linux-x86-64.so.2")
# Files per sandbox call: one call for a typical closure, and far below the kernel's
# limit on the total size of a command line (ARG_MAX, 2 MiB by default on Linux).
BATCH = 2000
_FILE = "@@venvseal-loader-check-file@@"
_END = "@@venvseal-loader-check-end@@"
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


class LoaderCheckError(VenvsealError):
    """The loader could not inspect a file at all (it is missing, or the loader failed)."""

    def __init__(self, file: PurePosixPath, problem: str) -> None:
        self.file = file
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"dynamic loader check of {self.file} failed: {self.problem}; check that the "
                "closure is mounted at that path and that the toolchain has the loader")


def loader_check(files: Sequence[PurePosixPath], *, runner: Sandbox, spec: SandboxSpec,
                 loader: PurePosixPath = DEFAULT_LOADER) -> dict[PurePosixPath, list[str]]:
    """For each file (a path inside the sandbox), the sonames the loader reports not found.

    An empty list means every dependency loads. Files the loader does not take as dynamic
    objects (static executables, but also files for another architecture) get an empty list
    too, so pass only files of the loader's architecture. The caller mounts the closure at
    its path inside ``spec``.
    """
    result: dict[PurePosixPath, list[str]] = {}
    for start in range(0, len(files), BATCH):
        batch = files[start:start + BATCH]
        argv = ["/bin/sh", "-c", _SCRIPT, "sh", str(loader), *map(str, batch)]
        done = runner.run(spec, argv, what=f"dynamic loader check with {loader}")
        result.update(_parse(done.output, batch))
    return result


def _parse(output: str, files: Sequence[PurePosixPath]) -> dict[PurePosixPath, list[str]]:
    """Split the loop's output per file and pick out the ``not found`` lines."""
    result: dict[PurePosixPath, list[str]] = {}
    sections = output.split(f"{_FILE} ")[1:]
    if len(sections) != len(files):
        raise LoaderCheckError(files[len(sections) - 1 if sections else 0],
                               f"unexpected output from the check loop:\n{output[-2000:]}")
    for file, section in zip(files, sections, strict=True):
        body, _, status = section.rpartition(f"{_END} ")
        status = status.strip()
        lines = body.splitlines()[1:]  # the first line is the file name
        missing = [m[1] for line in lines if (m := _NOT_FOUND.match(line))]
        if status == "missing":
            raise LoaderCheckError(file, "no such file inside the sandbox")
        if status not in ("0", "not-dynamic") and not missing:
            raise LoaderCheckError(file, f"exit {status}:\n" + "\n".join(lines[-10:]))
        result[file] = list(dict.fromkeys(missing))
    return result
