"""Commands run in the sandbox with the closure: ``[[assemble.run]]`` steps and ``[verify]``
commands, under one set of rules.

A string runs with ``/bin/sh -c``, an array as it is; placeholders are expanded; ``PATH``
starts with the closure's ``bin/``; the recipe's ``env`` is added to the sandbox's fixed
environment; each command has a time limit (``timeout``, 300 s by default) after which it is
killed, so a command that never exits cannot hang the build. A failure names the key, the
command and the last lines of its output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from venvseal.assemble.textedit import expand
from venvseal.errors import CommandError, CommandTimeoutError, VenvsealError
from venvseal.recipe.model import Command, RunStep
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec


class RunStepError(VenvsealError):
    """An ``[[assemble.run]]`` command failed or ran past its time limit."""


def argv_of(command: Command, values: Mapping[str, str]) -> list[str]:
    """The argv for ``command``: a shell line for /bin/sh, or an array, placeholders expanded."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", expand(command, values)]
    return [expand(part, values) for part in command]


def shown(command: Command, values: Mapping[str, str]) -> str:
    """``command`` as a user reads it: the shell line, or the argv joined."""
    argv = argv_of(command, values)
    return " ".join(argv[2:] if isinstance(command, str) else argv)


def closure_spec(spec: SandboxSpec, logical: PurePosixPath, env: Mapping[str, str],
                 values: Mapping[str, str]) -> SandboxSpec:
    """``spec`` with the closure's ``bin/`` first on PATH and the recipe's ``env`` added."""
    full = {**spec.env, **{k: expand(v, values) for k, v in env.items()},
            "PATH": f"{logical}/bin:{spec.env.get('PATH', '/usr/bin:/bin')}"}
    return replace(spec, env=full)


def run_command(command: Command, *, where: str, runner: Sandbox, spec: SandboxSpec,
                values: Mapping[str, str], timeout: float,
                wrap: Callable[[list[str]], list[str]] | None = None) -> str | None:
    """Run ``command`` (the recipe's key ``where``); None if it succeeded, else the problem.
    ``wrap`` may put the command line inside another (a tracer)."""
    line = shown(command, values)
    argv = argv_of(command, values)
    try:
        runner.run(spec, wrap(argv) if wrap is not None else argv, what=where, timeout=timeout)
    except CommandTimeoutError as err:
        return (f"{where} did not finish within {timeout:g} s and was killed: {line}; make "
                f"it finish, or raise its timeout{_tail(err)}")
    except CommandError as err:
        return f"{where} failed (exit {err.returncode}): {line}{_tail(err)}"
    return None


def _tail(err: CommandError) -> str:
    lines = err.output_tail.rstrip().splitlines()
    return "".join(f"\n    {line}" for line in lines)


def run_steps(steps: Sequence[RunStep], *, key_prefix: str, logical: PurePosixPath,
              runner: Sandbox, spec: SandboxSpec, values: Mapping[str, str],
              on_step: Callable[[str], None]) -> None:
    """Run every ``[[assemble.run]]`` step in order, offline, with the closure writable
    (``spec`` mounts it so); the first failure stops the build."""
    for i, step in enumerate(steps):
        where = f"{key_prefix}assemble.run[{i}]"
        on_step(f"{where}: {shown(step.command, values)}")
        job = replace(closure_spec(spec, logical, step.env, values), network=False, cwd=logical)
        problem = run_command(step.command, where=where, runner=runner, spec=job,
                              values=values, timeout=step.timeout)
        if problem is not None:
            raise RunStepError(f"{problem}\n(the command runs offline, with @out@ writable "
                               "and every other path read-only)")
