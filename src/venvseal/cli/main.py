"""The command line: parse, call the library, render results. The only place that prints or exits.

Exit codes: 0 success; 1 a build, hash check or verification failed; 2 bad usage, recipe or
input. ``--json`` prints one JSON document on stdout, also for errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from venvseal import __version__
from venvseal.cli import commands
from venvseal.cli.ui import Ui
from venvseal.errors import EXIT_BUILD, EXIT_OK, EXIT_USAGE, UsageError, VenvsealError
from venvseal.hashes import HASH_FORMATS

Handler = Callable[[argparse.Namespace, Ui], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting, so errors are rendered once."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Options accepted before and after the subcommand; the subcommand's copies must not
    # overwrite what was given before it, hence SUPPRESS there.
    default: object = None if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="show the commands run, and tracebacks on errors")
    parser.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="print one JSON document on stdout (for machines)")
    parser.add_argument("--store", type=Path, default=default, metavar="DIR",
                        help="store root (default: $VENVSEAL_STORE or "
                             "~/.local/share/venvseal/store)")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = _Parser(prog="venvseal", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"venvseal {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        p.set_defaults(handler=handler)
        return p

    p = command("hash", commands.cmd_hash, "print the NAR sha256 of a path, as Nix computes it")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=HASH_FORMATS, default="sri",
                   help="sri (sha256-...=, default), nix32 (as nix-hash --base32) or base16")

    p = command("verify", commands.cmd_verify,
                "re-hash store paths and report any whose content changed")
    p.add_argument("paths", nargs="*", metavar="PATH", help="store paths (default: all)")

    p = command("repair", commands.cmd_repair,
                "rebuild (or refetch) a damaged store path from the recipe that makes it")
    _recipe_arg(p)
    p.add_argument("path", metavar="PATH", help="the damaged store path")
    p.add_argument("--force", action="store_true", help="rebuild even if it verifies")
    _uv_cache_arg(p)

    p = command("gc", commands.cmd_gc, "delete store paths that no root (out-link) reaches")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")

    p = command("show", commands.cmd_show, "validate a recipe and print what venvseal read")
    _recipe_arg(p)

    p = command("deps", commands.cmd_deps,
                "build (or reuse) the fixed-output dependency stage and print its store path")
    _recipe_arg(p)
    _uv_cache_arg(p)
    _substituter_arg(p)
    p.add_argument("--update-hash", action="store_true",
                   help="write the stage's actual hash into the recipe (keeps its comments) "
                   "and what it was built with into venvseal.lock")
    _drift_arg(p)

    p = command("build", commands.cmd_build,
                "build (or reuse) the closure: deps, fetches, offline assembly, verify")
    _recipe_arg(p)
    _uv_cache_arg(p)
    _substituter_arg(p)
    p.add_argument("--out-link", type=Path, metavar="PATH",
                   help="make PATH a symlink to the closure, and a gc root")
    p.add_argument("--update-hash", action="store_true",
                   help="write the deps stage's actual hash into the recipe, and what it "
                   "was built with into venvseal.lock")
    _drift_arg(p)

    p = command("run", commands.cmd_run,
                "build (or reuse) the closure, then run a command in it, in the sandbox "
                "with network ('@out@' and '@python@' in the command are expanded)")
    _recipe_arg(p)
    _substituter_arg(p)
    _uv_cache_arg(p)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                   help="set a variable for the command (repeatable)")
    p.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                   help="pass a host variable to the command (repeatable)")
    p.epilog = "usage: venvseal run [RECIPE] [options] -- COMMAND [ARG...]"

    p = command("closure", commands.cmd_closure,
                "build (or reuse) the closure, then list what it needs from the toolchain "
                "root at run time (interpreter, standard library, shared libraries, "
                "[image] include, /etc) with sizes")
    _recipe_arg(p)
    _uv_cache_arg(p)

    p = command("lock", commands.cmd_lock,
                "make or update the project's uv.lock with the toolchain's python, in the "
                "sandbox (for toolchains the host cannot run, such as a Debian sid root)")
    _recipe_arg(p)
    _uv_cache_arg(p)

    p = command("toolchain", commands.cmd_toolchain,
                "prepare the recipe's toolchain (a Debian root is made once, with "
                "debootstrap) and print its root folder")
    _recipe_arg(p)

    p = command("check", commands.cmd_check,
                "rebuild the deps stage from a cold uv cache and compare the two builds")
    _recipe_arg(p)
    _uv_cache_arg(p)

    p = command("image", commands.cmd_image,
                "build (or reuse) the closure and write it as an OCI image archive that "
                "docker load, podman load and skopeo read; prints the manifest digest")
    _recipe_arg(p)
    _uv_cache_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="the archive to write, e.g. app.tar")
    p.add_argument("--tag", metavar="NAME:TAG",
                   help="the image's name in the archive (default: <app name>:<app version>)")

    p = command("push", commands.cmd_push,
                "build the image (or read --archive) and push it to a registry; prints the "
                "manifest digest (credentials: $DOCKER_CONFIG/config.json or "
                "~/.docker/config.json)")
    _recipe_arg(p)
    p.add_argument("ref", metavar="IMAGE_REF",
                   help="HOST[:PORT]/REPO[:TAG] (default tag: the image's own, e.g. the app "
                        "version); HTTP for localhost and 127.0.0.1, HTTPS elsewhere")
    _uv_cache_arg(p)
    p.add_argument("--archive", type=Path, metavar="FILE",
                   help="push this archive (written by venvseal image) instead of building")

    p = command("cache", commands.cmd_cache_push,
                "share store paths through an OCI registry (a build cache)")
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION", parser_class=_Parser,
                               required=True)
    p = actions.add_parser("push", help="build (or reuse) the recipe, then push its store "
                           "paths (closure, deps, fetches, Debian toolchain) to the cache",
                           description="build (or reuse) the recipe, then push its store "
                           "paths (closure, deps, fetches, Debian toolchain) to the cache")
    _common(p, top=False)
    p.set_defaults(handler=commands.cmd_cache_push)
    _recipe_arg(p)
    _uv_cache_arg(p)
    _substituter_arg(p)
    p.add_argument("--to", required=True, metavar="oci://HOST[:PORT]/REPO",
                   help="the registry repository to push to (HTTP for localhost and "
                        "127.0.0.1, HTTPS elsewhere; credentials from the docker config)")
    return parser


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` for --env; argparse turns the error into a usage error naming it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. --env PGHOST=db)")
    return key, value


def _recipe_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", type=Path, metavar="RECIPE",
                   help="venvseal.toml, pyproject.toml, or their folder (default: .)")


def _drift_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--update-hash-on-drift", action="store_true",
                   help="--update-hash, but only when the toolchain (its packages, uv, the "
                   "interpreter) differs from the one venvseal.lock recorded; says what moved")


def _uv_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uv-cache", type=Path, metavar="DIR",
                   help="persistent uv cache for the deps stage (default: $VENVSEAL_UV_CACHE "
                        "or ~/.cache/venvseal/uv); it never changes the output")


def _substituter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--substituter", action="append", metavar="oci://HOST[:PORT]/REPO",
                   help="fetch store paths from this cache instead of building them "
                        "(repeatable; default: $VENVSEAL_SUBSTITUTERS, space-separated)")


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("venvseal")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first '--' is a command to run (venvseal run), never our options.
    command_argv: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, command_argv = args_list[:cut], args_list[cut + 1:]
    verbose = "-v" in args_list or "--verbose" in args_list
    as_json = "--json" in args_list
    ui = Ui(json_mode=as_json, env=os.environ)
    try:
        args = build_parser().parse_args(args_list)
        verbose, ui.json_mode = args.verbose, args.json
        args.argv = command_argv
        if args.command == "run" and not command_argv:
            raise UsageError("venvseal run: give the command after '--', e.g. "
                             "venvseal run . -- @python@ -c 'import app'")
        _configure_logging(args.verbose)
        if getattr(args, "handler", None) is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        code: int = args.handler(args, ui)
        return code
    except VenvsealError as err:
        if verbose:
            traceback.print_exc()
        ui.error(str(err), err.exit_code)
        return err.exit_code
    except KeyboardInterrupt:
        ui.error("interrupted", 130)
        return 130
    except Exception as err:  # a bug in venvseal: say so, keep the traceback behind -v
        if verbose:
            traceback.print_exc()
        ui.error(f"internal error: {type(err).__name__}: {err} (rerun with -v for the traceback "
                 "and report it)", EXIT_BUILD)
        return EXIT_BUILD


__all__ = ["EXIT_OK", "build_parser", "main"]
