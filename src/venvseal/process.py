"""Every external command venvseal runs goes through :func:`run`.

The command is logged (shown with ``-v``); on failure the error carries the command and the
last lines of its output, so the user sees why without rerunning anything.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from venvseal.errors import CommandError, CommandTimeoutError, VenvsealError
from venvseal.netutil import scrub as scrub_urls

log = logging.getLogger("venvseal.process")

TAIL_LINES = 25


@dataclass(eq=False)
class ToolMissingError(VenvsealError):
    """A program venvseal needs is not installed, or not in a version it can use: the
    ``problem``, and the ``hint`` saying how to install one it can."""

    problem: str
    hint: str

    template = "{problem}; {hint}"


@dataclass(frozen=True, slots=True)
class Completed:
    """What a finished command printed (stdout and stderr, interleaved) and its status."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of output, where the reason for a failure usually is."""
        return "\n".join(self.output.splitlines()[-lines:])


def find_tool(program: str, package: str, path: str | None = None) -> str:
    """The absolute path of ``program`` on ``path``; ToolMissingError naming the package."""
    found = shutil.which(program, path=path)
    if found is None:
        raise ToolMissingError(f"{program} is not installed",
                               f"install it (Debian: apt-get install {package}) and run again")
    return found


def run(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, check: bool = True, stdin: str | None = None,
        scrub: Callable[[str], str] | None = None, pass_fds: Sequence[int] = (),
        timeout: float | None = None,
        on_line: Callable[[str], None] | None = None) -> Completed:
    """Run ``argv`` to completion; raise CommandError (with the output's tail) if it fails.

    ``on_line`` hears each line of output (scrubbed) as it is printed: progress for people.

    With ``timeout`` (seconds), a command still running then is killed (SIGKILL) and
    CommandTimeoutError raised, whatever ``check`` says.

    Every text that leaves this function for a log line or an error (the command line and
    the output's tail) has the credentials of any URL in it redacted (netutil.scrub), then
    goes through ``scrub``, with which a caller removes secrets it knows of in other forms.
    """
    def clean(text: str) -> str:
        return scrub_urls(scrub(text) if scrub is not None else text)

    shown = [clean(arg) for arg in argv]
    log.debug("$ %s", shlex.join(shown))
    started = time.perf_counter()
    try:
        if on_line is not None and stdin is None:
            proc = _streamed(argv, env=env, cwd=cwd, pass_fds=pass_fds, timeout=timeout,
                             on_line=lambda line: on_line(clean(line)))
        else:
            proc = subprocess.run(
                list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", check=False, pass_fds=tuple(pass_fds),
                timeout=timeout,
            )
    except subprocess.TimeoutExpired as err:
        output = err.output if isinstance(err.output, str) else (err.output or b"").decode(
            "utf-8", "replace")
        tail = clean(Completed(tuple(argv), -9, output).tail())
        raise CommandTimeoutError(what, shown, -9, tail, timeout=timeout or 0) from None
    except FileNotFoundError as err:
        raise CommandError(what, shown, 127, f"{shown[0]}: not found") from err
    done = Completed(tuple(argv), proc.returncode, proc.stdout)
    log.debug("%s: exit %d after %.3f s", what, proc.returncode, time.perf_counter() - started)
    if proc.returncode != 0:
        tail = clean(done.tail())
        log.debug("%s", tail)
        if check:
            raise CommandError(what, shown, proc.returncode, tail)
    return done


def _streamed(argv: Sequence[str], *, env: Mapping[str, str] | None, cwd: Path | None,
              pass_fds: Sequence[int], timeout: float | None,
              on_line: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` for :func:`run`, handing each output line to ``on_line`` as it
    comes; TimeoutExpired (with the output so far) after ``timeout`` seconds."""
    lines: list[str] = []
    with subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace",
                          pass_fds=tuple(pass_fds)) as proc:
        assert proc.stdout is not None

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                on_line(line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(5)
            raise subprocess.TimeoutExpired(list(argv), timeout or 0, "".join(lines)) from None
        reader.join()
    return subprocess.CompletedProcess(list(argv), proc.returncode, "".join(lines))
