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

from venvseal.errors import PathError
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec

DEFAULT_LOADER = PurePosixPath("/lib64/ld-linux-x86-64.so.2")
# Files per sandbox call: one call for a typical closure, and far below the kernel's
# limit on the total size of a command line (ARG_MAX, 2 MiB by default on Linux).
BATCH = 2000
FILE_MARK = "@@venvseal-loader-trace-file@@"
END_MARK = "@@venvseal-loader-trace-end@@"
_FILE, _END = FILE_MARK, END_MARK
# $1 is the loader, the rest are files. --verify exits 0 (dynamic executable), 2 (shared
# object) or 1 (static, not ELF, not for this loader, or a file it cannot map); only 0 and
# 2 can be traced. On 1 the trace runs anyway, only to tell a file the loader cannot map
# (it says "error while loading shared libraries") from the rest; any other status is a
# crash of the loader on the file (a truncated file: SIGBUS).
_SCRIPT = f"""loader=$1; shift
for f in "$@"; do
  printf '%s %s\\n' '{_FILE}' "$f"
  if [ ! -e "$f" ]; then printf '%s missing\\n' '{_END}'; continue; fi
  "$loader" --verify "$f" >/dev/null 2>&1
  verified=$?
  case $verified in
    0|2) LD_TRACE_LOADED_OBJECTS=1 "$loader" "$f" 2>&1; printf '%s %s\\n' '{_END}' "$?";;
    1) out=$(LD_TRACE_LOADED_OBJECTS=1 "$loader" "$f" 2>&1)
       case $out in
         *"error while loading shared libraries"*"wrong ELF class"*)
           printf '%s not-dynamic\\n' '{_END}';;
         *"error while loading shared libraries"*)
           printf '%s\\n%s unloadable\\n' "$out" '{_END}';;
         *) printf '%s not-dynamic\\n' '{_END}';;
       esac;;
    *) printf '%s crashed-%s\\n' '{_END}' "$verified";;
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
    error: str | None = None  # the loader could not inspect or load the file: why


class LoaderCheckError(PathError):
    """The loader could not inspect a file at all (it is missing, or the loader failed)."""

    template = ("dynamic loader check of {path} failed: {problem}; check that the closure is "
                "mounted at that path and that the toolchain has the loader")


def trace(files: Sequence[PurePosixPath], *, runner: Sandbox, spec: SandboxSpec,
          loader: PurePosixPath = DEFAULT_LOADER, strict: bool = True
          ) -> dict[PurePosixPath, Trace]:
    """For each file (a path inside the sandbox), what the toolchain's loader loads for it.

    Files the loader does not take as dynamic objects (static executables, but also files
    for another architecture) get an empty trace. The caller mounts the files in ``spec``.
    A file the loader cannot inspect or load raises LoaderCheckError, or, unless ``strict``,
    gets a trace whose ``error`` says why.
    """
    result: dict[PurePosixPath, Trace] = {}
    for start in range(0, len(files), BATCH):
        batch = files[start:start + BATCH]
        argv = ["/bin/sh", "-c", _SCRIPT, "sh", str(loader), *map(str, batch)]
        done = runner.run(spec, argv, what=f"dynamic loader trace with {loader}")
        result.update(parse_trace(done.output, batch, strict=strict))
    return result


def loader_check(files: Sequence[PurePosixPath], *, runner: Sandbox, spec: SandboxSpec,
                 loader: PurePosixPath = DEFAULT_LOADER) -> dict[PurePosixPath, list[str]]:
    """For each file (a path inside the sandbox), the sonames the loader reports not found.

    An empty list means every dependency loads (see :func:`trace` for what counts).
    """
    traced = trace(files, runner=runner, spec=spec, loader=loader)
    return {file: list(t.missing) for file, t in traced.items()}


# Why the loader refused a file, by the words of its message, and what to do about it.
HINTS = (
    (("not page-aligned", "file too short", "invalid ELF header", "ELF file's phentsize",
      "ELF file version", "crashed", "cannot map", "unexpected reloc"),
     "damaged ELF file(s): a tool rewrote or truncated them (binutils' strip can misalign "
     "load segments). Build the deps stage again ('venvseal deps --update-hash') with a "
     "venvseal that keeps them as the wheel had them, or exclude the package"),
    (("wrong ELF class", "ELFCLASS"),
     "ELF file(s) for another word size or machine: the package ships a binary for another "
     "platform; install its wheel for this one, or exclude the package ([deps] exclude)"),
    (("no such file inside the sandbox",),
     "file(s) missing inside the sandbox: check that the closure is mounted at its path"),
)
OTHER_HINT = "the loader's own words are above; check the file with 'ld.so --verify FILE'"
MISSING_HINT = ("missing libraries: install each library in the toolchain ([toolchain] debian "
                "packages or library-dirs), or add the soname to [assemble] ignore-missing")


def _hint(error: str) -> str:
    return next((hint for words, hint in HINTS if any(w in error for w in words)), OTHER_HINT)


def unresolved_lines(files: Sequence[PurePosixPath], ignored: Sequence[str], *,
                     runner: Sandbox, spec: SandboxSpec) -> str | None:
    """What the loader cannot do for ``files``, every file reported, or None if it loads
    them all: the sonames it cannot find (less those ``ignored``, fnmatch globs, allows)
    and the files it cannot load, then one hint per kind of failure."""
    traced = trace(files, runner=runner, spec=spec, strict=False) if files else {}
    lines: list[str] = []
    hints: list[str] = []
    for file, t in sorted(traced.items()):
        if t.error is not None:
            lines.append(f"  {file}: {t.error}")
            hints.append(_hint(t.error))
        elif kept := [lib for lib in t.missing
                      if not any(fnmatch.fnmatchcase(lib, p) for p in ignored)]:
            lines.append(f"  {file} -> {', '.join(kept)}")
            hints.append(MISSING_HINT)
    if not lines:
        return None
    return (f"the dynamic loader cannot load {len(lines)} ELF file(s):\n" + "\n".join(lines)
            + "\n" + "\n".join(f"- {h}" for h in dict.fromkeys(hints)))


def parse_trace(output: str, files: Sequence[PurePosixPath], *,
                strict: bool = True) -> dict[PurePosixPath, Trace]:
    """Split the loop's output per file into loaded paths and ``not found`` sonames; a file
    the loader failed on raises LoaderCheckError, or, unless ``strict``, carries why."""
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
        error = _failure(file, status, lines, missing)
        if error is not None and strict:
            raise LoaderCheckError(file, error)
        loaded = (PurePosixPath(m[1]) for line in lines if (m := _LOADED.match(line)))
        result[file] = Trace(tuple(dict.fromkeys(p for p in loaded if p.is_absolute())),
                             missing, error)
    return result


def _failure(file: PurePosixPath, status: str, lines: list[str],
             missing: tuple[str, ...]) -> str | None:
    """Why the loader failed on ``file``, from the trace's status and output; None if not."""
    if status == "missing":
        return "no such file inside the sandbox"
    if status.startswith("crashed-"):
        return f"the dynamic loader crashed on it (exit {status.removeprefix('crashed-')})"
    if status == "unloadable":
        said = [line.split(": ")[-1] for line in lines if "error while loading" in line]
        return said[-1] if said else "\n".join(lines[-10:])
    if status not in ("0", "not-dynamic") and not missing:
        return f"the dynamic loader failed on {file} (exit {status}):\n" + "\n".join(lines[-10:])
    return None
