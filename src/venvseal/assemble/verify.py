"""``[verify]``: the finished closure is exercised in the sandbox before it is registered.

Imports and commands run with the closure's python, offline, with ``[verify] env`` and a time
limit per check (``[verify] timeout``, see commands.py); every ELF file is checked with the
toolchain's dynamic loader. Any failure fails the build and nothing enters the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TypeVar

from venvseal.assemble import commands
from venvseal.assemble.importable import find_importable
from venvseal.elf import loadercheck
from venvseal.elf.buildid import find_elf_files
from venvseal.errors import CommandTimeoutError, VenvsealError
from venvseal.recipe.model import Command, Recipe
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec
from venvseal.toolchain.trace import Tracer

T = TypeVar("T")
FAILED = "VENVSEAL-IMPORT-FAILED"
END = "VENVSEAL-IMPORT-END"
TRACEBACK_LINES = 12  # of each failed import's traceback: the last frames and the error
# Imports each module given, reporting every failure (not only the first) with its traceback
# between two marker lines; the frames of this script and of importlib are left out.
IMPORTER = f"""\
import importlib, sys, traceback
failed = 0
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as err:
        failed += 1
        tb = traceback.TracebackException.from_exception(err)
        tb.stack = traceback.StackSummary.from_list(
            [f for f in tb.stack if not f.filename.startswith(("<frozen importlib", "<string>"))])
        print("\\n{FAILED}", name, flush=True)
        print("".join(tb.format()).rstrip(), flush=True)
        print("{END}", flush=True)
sys.exit(1 if failed else 0)
"""


class VerifyError(VenvsealError):
    """The closure failed a [verify] check; the message has the evidence."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """What was checked, and what import-all left out (name, why)."""

    imports: int
    commands: int
    elf_files: int
    skipped: tuple[tuple[str, str], ...] = ()


def parse_failures(output: str) -> list[tuple[str, list[str]]]:
    """(module, the last lines of its traceback) for each failed import in ``output``."""
    failures: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in output.splitlines():
        if line.startswith(f"{FAILED} "):
            current = (line.removeprefix(f"{FAILED} ").strip(), [])
            failures.append(current)
        elif line == END:
            current = None
        elif current is not None:
            current[1].append(line)
    return [(name, lines if len(lines) <= TRACEBACK_LINES else
             [lines[0], "  ...", *lines[-TRACEBACK_LINES + 2:]]) for name, lines in failures]


def _traced(tracer: Tracer | None, argv: list[str], label: str, order: int) -> list[str]:
    return argv if tracer is None else tracer.wrap(argv, label, order)


def _run_imports(modules: Sequence[str], *, runner: Sandbox, spec: SandboxSpec,
                 python: str, timeout: float, tracer: Tracer | None = None,
                 order: int = 0) -> tuple[list[str], str | None]:
    """Import ``modules`` in one process: a block per failed import (its name, then its
    traceback indented), and a problem if the process failed without naming a module (it
    crashed, could not start, or ran past ``timeout``)."""
    try:
        argv = _traced(tracer, [python, "-c", IMPORTER, *modules], "verify.imports", order)
        done = runner.run(spec, argv, what="verify imports", check=False, timeout=timeout)
    except CommandTimeoutError as err:
        return [], (f"importing {len(modules)} modules did not finish within {timeout:g} s "
                    "and was killed; raise [verify] timeout, or find the module that hangs "
                    f"(list it in import-skip):\n{_indent(err.output_tail.splitlines(), 4)}")
    failures = parse_failures(done.output)
    blocks = [f"{name}:\n{_indent(lines, 4)}" for name, lines in failures]
    if done.returncode != 0 and not failures:
        return [], (f"the import process failed (exit {done.returncode}) without naming a "
                    f"module:\n{_indent(done.tail().splitlines(), 4)}")
    return blocks, None


def _indent(lines: Sequence[str], width: int) -> str:
    return "\n".join(" " * width + line for line in lines)


def _check_loader(elf_files: Sequence[PurePosixPath], ignored: Sequence[str], *,
                  runner: Sandbox, spec: SandboxSpec) -> list[str]:
    report = loadercheck.unresolved_lines(elf_files, ignored, runner=runner, spec=spec)
    return [] if report is None else [f"verify: {report}"]


def _announce(on_step: Callable[[str], None], text: str, task: Callable[[], T]
              ) -> Callable[[], T]:
    """``task``, saying ``text`` when it starts (it may wait for a free worker first)."""
    def run() -> T:
        on_step(text)
        return task()
    return run


def verify(rec: Recipe, closure: Path, *, logical: PurePosixPath, site_packages: str,
           values: Mapping[str, str], runner: Sandbox, spec: SandboxSpec,
           jobs: int = 1, on_step: Callable[[str], None] = lambda _msg: None,
           tracer: Tracer | None = None) -> VerifyReport:
    """Run every check of ``rec.verify`` against the closure built at ``closure``.

    The checks are independent processes, run ``jobs`` at a time, each named by
    ``on_step`` when it starts; the modules to import are dealt round-robin into ``jobs``
    processes, each importing the explicit ``imports`` first. Every failure is reported, in
    one VerifyError. With ``tracer``, the imports and commands run under strace
    (toolchain/trace.py); the loader check does not.
    """
    jobs = max(1, jobs)
    timeout = rec.verify.timeout
    python = str(logical / "bin" / "python")
    # Read-only: a check must not change the closure it checks, nor the store paths it
    # links to.
    mounts = tuple(replace(m, writable=False) for m in spec.mounts)
    mounts += tracer.mounts if tracer is not None else ()
    job = commands.closure_spec(replace(spec, mounts=mounts, network=False), logical,
                                rec.verify.env, values)
    first = list(rec.verify.imports)
    rest: list[str] = []
    skipped: tuple[tuple[str, str], ...] = ()
    if rec.verify.import_all:
        found = find_importable(closure / site_packages, rec.verify.import_skip)
        rest = [m for m in found.modules if m not in first]
        skipped = found.skipped
    chunks = [first + rest[i::jobs] for i in range(jobs) if rest[i::jobs] or (i == 0 and first)]
    imports = [_announce(on_step, f"verify: importing {len(chunk)} modules",
                         partial(_run_imports, chunk, runner=runner, spec=job, python=python,
                                 timeout=timeout, tracer=tracer, order=n))
               for n, chunk in enumerate(chunks)]
    checks: list[Callable[[], list[str]]]
    checks = [_announce(on_step, f"verify: {rec.key_prefix}verify.commands[{i}]: "
                        f"{commands.shown(command, values)}",
                        partial(_command_task, command, i, runner=runner, spec=job,
                                values=values, key_prefix=rec.key_prefix, timeout=timeout,
                                tracer=tracer))
              for i, command in enumerate(rec.verify.commands)]
    # The closure's own ELF files: the relinked deps were checked when they were made.
    elf_files = [logical / p.relative_to(closure).as_posix() for p in find_elf_files(closure)]
    if elf_files:
        checks.append(_announce(on_step, f"verify: dynamic loader check of {len(elf_files)} "
                                "ELF files", partial(_check_loader, elf_files,
                                                     rec.assemble.ignore_missing,
                                                     runner=runner, spec=job)))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        imported = [pool.submit(task) for task in imports]
        checked = [pool.submit(task) for task in checks]
        outcomes = [f.result() for f in imported]
        problems = [line for f in checked for line in f.result()]
    bad = [block for blocks, _ in outcomes for block in blocks]
    crashed = [problem for _, problem in outcomes if problem is not None]
    if bad or crashed:
        detail = "\n".join([_indent(b.splitlines(), 2) for b in bad] + [f"  {p}" for p in crashed])
        problems.insert(0, f"verify: {'some' if crashed else len(bad)} import(s) failed in "
                           f"the closure:\n{detail}")
    if problems:
        raise VerifyError("\n".join(problems))
    return VerifyReport(imports=len(first) + len(rest), commands=len(rec.verify.commands),
                        elf_files=len(elf_files), skipped=skipped)


def _command_task(command: Command, i: int, *, runner: Sandbox, spec: SandboxSpec,
                  values: Mapping[str, str], key_prefix: str, timeout: float,
                  tracer: Tracer | None = None) -> list[str]:
    problem = commands.run_command(
        command, where=f"{key_prefix}verify.commands[{i}]", runner=runner, spec=spec,
        values=values, timeout=timeout,
        wrap=lambda argv: _traced(tracer, argv, f"verify.commands[{i}]", 1000 + i))
    return [] if problem is None else [problem]
