"""The command line's entry point: parse, run one command, render every error in one place.

The only place that prints or exits. Exit codes: 0 success; 1 a build, hash check or
verification failed; 2 bad usage, recipe or input. ``--json`` prints one JSON document on
stdout, also for errors.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

from venvseal.cli.parser import build_parser
from venvseal.cli.session import Session
from venvseal.cli.ui import Ui
from venvseal.errors import EXIT_BUILD, EXIT_OK, EXIT_USAGE, UsageError, VenvsealError
from venvseal.netutil import ScrubbingFormatter

# Commands whose argument list ends with a command to run, after '--'.
_RUNS = ("run",)


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(message)s"))
    root = logging.getLogger("venvseal")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and the command to run: everything after the first '--', verbatim."""
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def _hint(err: VenvsealError, session: Session | None) -> tuple[str, tuple[str, str] | None]:
    """What to do next, and where (file, key), for errors whose own message cannot know
    the recipe."""
    from venvseal.deps.pinlock import DeclaredHashMismatchError

    if isinstance(err, DeclaredHashMismatchError):  # its message names the key and the way
        return "", (str(err.recipe_file), err.key)
    return "", None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    ours, command_argv = _split(list(sys.argv[1:] if argv is None else argv))
    verbose = "-v" in ours or "--verbose" in ours
    ui = Ui(json_mode="--json" in ours, env=os.environ)
    session: Session | None = None
    try:
        try:
            args = build_parser().parse_args(ours)
        except SystemExit as done:  # --help and --version print, then "exit"
            return done.code if isinstance(done.code, int) else EXIT_OK
        verbose, ui.json_mode = args.verbose, args.json
        args.argv = command_argv
        if command_argv and args.command not in _RUNS:
            raise UsageError(f"venvseal {args.command}: takes nothing after '--' (only "
                             "'venvseal run DIR -- COMMAND' does)")
        _configure_logging(args.verbose)
        if getattr(args, "handler", None) is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        session = Session(args=args, ui=ui)
        code: int = args.handler(session)
        ui.flush()
        return code
    except VenvsealError as err:
        if verbose:
            traceback.print_exc()
        hint, where = _hint(err, session)
        ui.fail(err, str(err) + hint, err.exit_code, where=where)
        return err.exit_code
    except KeyboardInterrupt:
        ui.fail(None, "interrupted", 130)
        return 130
    except BrokenPipeError:  # stdout's reader left (venvseal closure | head): not an error
        ui.broken_pipe()
        return EXIT_OK
    except Exception as err:  # a bug in venvseal: say so, keep the traceback behind -v
        if verbose:
            traceback.print_exc()
        ui.fail(err, f"internal error: {type(err).__name__}: {err} (rerun with -v for the "
                "traceback and report it)", EXIT_BUILD)
        return EXIT_BUILD


__all__ = ["EXIT_OK", "build_parser", "main"]
