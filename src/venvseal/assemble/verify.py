"""``[verify]``: the finished closure is exercised in the sandbox before it is registered.

Imports and commands run with the closure's python, offline; every ELF file is checked with
the toolchain's dynamic loader. Any failure fails the build and nothing enters the store.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath

from venvseal.assemble.textedit import expand
from venvseal.elf import loadercheck
from venvseal.elf.buildid import find_elf_files
from venvseal.errors import CommandError, VenvsealError
from venvseal.recipe.model import Recipe
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec
from venvseal.toolchain.trace import Tracer

FAILED = "VENVSEAL-IMPORT-FAILED"
# Imports each module given, reporting every failure (not only the first) with its tail.
IMPORTER = f"""\
import importlib, sys, traceback
failed = 0
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as err:
        failed += 1
        lines = traceback.format_exception(err)
        print("{FAILED}", name, "".join(lines[-4:]).strip().replace("\\n", " | "))
sys.exit(1 if failed else 0)
"""


class VerifyError(VenvsealError):
    """The closure failed a [verify] check; the message has the evidence."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """What was checked."""

    imports: int
    commands: int
    elf_files: int


def top_level_modules(site_packages: Path, skip: Sequence[str] = ()) -> list[str]:
    """Importable top-level names each installed distribution's RECORD lists."""
    names: set[str] = set()
    for record in sorted(site_packages.glob("*.dist-info/RECORD")):
        with record.open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                first = row[0].split("/", 1) if row else [""]
                head = first[0]
                if len(first) == 1 and head.endswith(".py"):
                    names.add(head[:-3])
                elif len(first) == 1 and head.endswith(".so"):
                    names.add(head.split(".", 1)[0])
                elif len(first) == 2 and first[1] in ("__init__.py", "__init__.pyi"):
                    names.add(head)
    return sorted(n for n in names if n.isidentifier() and n not in skip)


def _traced(tracer: Tracer | None, argv: list[str], label: str, order: int) -> list[str]:
    return argv if tracer is None else tracer.wrap(argv, label, order)


def _run_imports(modules: Sequence[str], *, runner: Sandbox, spec: SandboxSpec,
                 python: str, tracer: Tracer | None = None,
                 order: int = 0) -> tuple[list[str], str | None]:
    """Import ``modules`` in one process: a line per failed import, and the output's tail
    if the process failed without naming a module (it crashed, or could not start)."""
    argv = _traced(tracer, [python, "-c", IMPORTER, *modules], "verify.imports", order)
    try:
        runner.run(spec, argv, what="verify imports")
    except CommandError as err:
        bad = [ln.removeprefix(FAILED).strip() for ln in err.output_tail.splitlines()
               if ln.startswith(FAILED)]
        return bad, None if bad else err.output_tail
    return [], None


def _run_command(command: str | tuple[str, ...], i: int, *, runner: Sandbox, spec: SandboxSpec,
                 values: Mapping[str, str], key_prefix: str,
                 tracer: Tracer | None = None) -> list[str]:
    argv = (["/bin/sh", "-c", expand(command, values)] if isinstance(command, str)
            else [expand(part, values) for part in command])
    try:
        runner.run(spec, _traced(tracer, argv, f"verify.commands[{i}]", 1000 + i),
                   what=f"{key_prefix}verify.commands[{i}]")
    except CommandError as err:
        return [f"{key_prefix}verify.commands[{i}] failed (exit {err.returncode}): "
                f"{' '.join(argv)}\n{err.output_tail}"]
    return []


def _check_loader(elf_files: Sequence[PurePosixPath], ignored: Sequence[str], *,
                  runner: Sandbox, spec: SandboxSpec) -> list[str]:
    lines = loadercheck.unresolved_lines(elf_files, ignored, runner=runner, spec=spec)
    return [] if lines is None else [f"verify: the dynamic loader cannot resolve:\n{lines}"]


def verify(rec: Recipe, closure: Path, *, logical: PurePosixPath, site_packages: str,
           values: Mapping[str, str], runner: Sandbox, spec: SandboxSpec,
           jobs: int = 1, tracer: Tracer | None = None) -> VerifyReport:
    """Run every check of ``rec.verify`` against the closure built at ``closure``.

    The checks are independent processes, run ``jobs`` at a time; the modules to import are
    dealt round-robin into ``jobs`` processes, each importing the explicit ``imports`` first.
    Every failure is reported, in one VerifyError. With ``tracer``, the imports and
    commands run under strace (toolchain/trace.py); the loader check does not.
    """
    jobs = max(1, jobs)
    python = str(logical / "bin" / "python")
    env = {**spec.env, "PATH": f"{logical}/bin:{spec.env.get('PATH', '/usr/bin:/bin')}"}
    # Read-only: a check must not change the closure it checks, nor the store paths it
    # links to.
    mounts = tuple(replace(m, writable=False) for m in spec.mounts)
    mounts += tracer.mounts if tracer is not None else ()
    job = SandboxSpec(root=spec.root, mounts=mounts, env=env, network=False, cwd=spec.cwd)
    first = list(rec.verify.imports)
    rest: list[str] = []
    if rec.verify.import_all:
        found = top_level_modules(closure / site_packages, rec.verify.import_skip)
        rest = [m for m in found if m not in first]
    chunks = [first + rest[i::jobs] for i in range(jobs) if rest[i::jobs] or (i == 0 and first)]
    imports = [partial(_run_imports, chunk, runner=runner, spec=job, python=python,
                       tracer=tracer, order=n) for n, chunk in enumerate(chunks)]
    commands = [partial(_run_command, command, i, runner=runner, spec=job, values=values,
                        key_prefix=rec.key_prefix, tracer=tracer)
                for i, command in enumerate(rec.verify.commands)]
    # The closure's own ELF files: the relinked deps were checked when they were made.
    elf_files = [logical / p.relative_to(closure).as_posix() for p in find_elf_files(closure)]
    loader = [partial(_check_loader, elf_files, rec.assemble.ignore_missing, runner=runner,
                      spec=job)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        imported = [pool.submit(task) for task in imports]
        checked = [pool.submit(task) for task in [*commands, *loader]]
        outcomes = [f.result() for f in imported]
        problems = [line for f in checked for line in f.result()]
    bad = [line for lines, _ in outcomes for line in lines]
    tails = [tail for _, tail in outcomes if tail is not None]
    if bad or tails:
        detail = "\n".join(f"  {b}" for b in bad + tails)
        problems.insert(0, f"verify: {'some' if tails else len(bad)} import(s) failed in the "
                           f"closure:\n{detail}")
    if problems:
        raise VerifyError("\n".join(problems))
    return VerifyReport(imports=len(first) + len(rest), commands=len(rec.verify.commands),
                        elf_files=len(elf_files))
