"""The command-line grammar: every command, in the order people use them, with help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NoReturn

from venvseal import __version__
from venvseal.cli import commands
from venvseal.cli.session import seconds
from venvseal.errors import UsageError
from venvseal.hashes import HASH_FORMATS
from venvseal.operations import Bind

if TYPE_CHECKING:
    from venvseal.cli.session import Session

Handler = Callable[["Session"], int]

DESCRIPTION = """\
venvseal turns a uv-locked Python app into a hermetic, hash-pinned closure: a folder in a
content-addressed store that runs the same on every machine, and an OCI image of it. The
dependencies are installed once, with network, in a sandbox and pinned by their hash; the
app is then assembled offline, relinked and checked."""

EPILOG = """\
first steps, in your project's folder (pyproject.toml and uv.lock):
  venvseal init                     write venvseal.toml and pin the dependencies' hash
  venvseal build --out-link result  build the closure
  venvseal run -- myapp --help      run a command in it (sandboxed, with network)
  venvseal image -o app.tar         write an OCI image archive (docker/podman load)

exit codes: 0 ok; 1 a build, hash check or verification failed; 2 bad usage, recipe or
input. Every command takes -v, --json and --store, before or after its name."""


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
                        help="print one JSON document on stdout (for machines); errors too, "
                             "as a list of problems with file, key and message")
    parser.add_argument("--store", type=Path, default=default, metavar="DIR",
                        help="store root (default: $VENVSEAL_STORE, else /venvseal/store for "
                             "root or when it is yours, else ~/.local/share/venvseal/store)")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = _Parser(prog="venvseal", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"venvseal {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                title="commands")

    def command(name: str, handler: Handler, help_text: str,
                aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, aliases=list(aliases))
        _common(p, top=False)
        p.set_defaults(handler=handler)
        return p

    p = command("init", commands.cmd_init,
                "write a starter recipe from pyproject.toml and uv.lock, then pin the "
                "dependencies' hash; says what it chose and why")
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                   help="the project's folder (default: .)")
    p.add_argument("--pyproject", action="store_true",
                   help="write [tool.venvseal] into pyproject.toml instead of venvseal.toml")
    p.add_argument("--no-hash", action="store_true",
                   help="leave deps.hash empty (no deps stage now; declare it later with "
                        "'venvseal build --update-hash')")
    p.add_argument("--force", action="store_true", help="replace an existing recipe")
    _uv_cache_arg(p)

    p = command("show", commands.cmd_show, "validate a recipe and print what venvseal read")
    _recipe_arg(p)

    p = command("lock", commands.cmd_lock,
                "make or update the project's uv.lock with the toolchain's python, in the "
                "sandbox (for toolchains the host cannot run, such as a Debian sid root)")
    _build_args(p)

    p = command("deps", commands.cmd_deps,
                "build (or reuse) the fixed-output dependency stage and print its store path")
    _build_args(p, substituters=True)
    _update_hash_arg(p)

    p = command("build", commands.cmd_build,
                "build (or reuse) the closure: deps, fetches, offline assembly, the recipe's "
                "[verify] checks; prints its store path")
    _build_args(p, substituters=True)
    p.add_argument("--out-link", type=Path, metavar="PATH",
                   help="make PATH a symlink to the closure, and a gc root")
    _update_hash_arg(p)

    p = command("run", commands.cmd_run,
                "build (or reuse) the closure, then run a command in it, in the sandbox with "
                "network; everything after '--' is the command, verbatim ('@out@' and "
                "'@python@' in it are expanded); Ctrl-C and SIGTERM reach the command")
    _run_args(p)
    p.usage = "venvseal run [RECIPE] [options] -- COMMAND [ARG...]"
    p.epilog = "example: venvseal run --cwd . -- @python@ -m myapp --port 8000"

    p = command("shell", commands.cmd_shell,
                "build (or reuse) the closure, then open an interactive shell in it, in the "
                "sandbox with network (the closure's bin/ first on PATH)")
    _run_args(p)
    p.usage = "venvseal shell [RECIPE] [options]"

    p = command("image", commands.cmd_image,
                "build (or reuse) the closure and write it as an OCI image archive that "
                "docker load, podman load and skopeo read; prints the manifest digest")
    _build_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="the archive to write, e.g. app.tar; an existing folder gets an OCI "
                        "image layout instead, its blobs hard links to the store's layers")
    p.add_argument("--tag", metavar="NAME:TAG",
                   help="the image's name in the archive (default: <app name>:<app version>)")

    p = command("push", commands.cmd_push,
                "build the image (or read --archive) and push it to a registry; prints the "
                "manifest digest (credentials: $DOCKER_CONFIG/config.json or "
                "~/.docker/config.json)")
    _build_args(p)
    p.add_argument("ref", metavar="IMAGE_REF",
                   help="HOST[:PORT]/REPO[:TAG] (default tag: the image's own, e.g. the app "
                        "version); HTTP for localhost and 127.0.0.1, HTTPS elsewhere")
    p.add_argument("--archive", type=Path, metavar="FILE",
                   help="push this archive (written by venvseal image) instead of building")

    p = command("closure", commands.cmd_closure,
                "build (or reuse) the closure, then list what it needs from the toolchain "
                "root at run time (interpreter, standard library, shared libraries, "
                "[image] include, /etc) with sizes")
    _build_args(p)

    p = command("check", commands.cmd_check,
                "rebuild the deps stage from a cold uv cache and compare the two builds")
    _build_args(p)

    p = command("toolchain", commands.cmd_toolchain,
                "prepare the recipe's toolchain (a Debian root is made once: from the .debs "
                "pinned in venvseal.lock, else with mmdebstrap) and print its root folder")
    _recipe_arg(p)
    p.add_argument("--lock", action="store_true",
                   help="pin a Debian root: resolve its packages against the mirror now and "
                        "record each .deb's version and sha256 in venvseal.lock")
    p.add_argument("--update-lock", action="store_true",
                   help="the same as --lock, to pin today's versions again after a change")

    _cache_command(sub)

    p = command("store-verify", commands.cmd_store_verify,
                "store integrity: re-hash store paths and report any whose content changed "
                "since it was added (not the recipe's [verify] checks, which build runs)",
                aliases=("verify",))
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="store paths or out-links (default: every path in the store)")

    p = command("repair", commands.cmd_repair,
                "rebuild (or refetch) a damaged store path from the recipe that makes it")
    _recipe_arg(p)
    p.add_argument("path", metavar="PATH", help="the damaged store path (or an out-link)")
    p.add_argument("--force", action="store_true", help="rebuild even if it verifies")
    _uv_cache_arg(p)

    p = command("gc", commands.cmd_gc, "delete store paths that no root (out-link) reaches")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--all-build-inputs", action="store_true",
                   help="also delete what rooted closures were built from (deps paths, "
                        "toolchain roots, wheels): they are kept by default for fast rebuilds")

    p = command("hash", commands.cmd_hash, "print the NAR sha256 of a path, as Nix computes it")
    p.add_argument("path", type=Path, metavar="PATH", help="a file or folder")
    p.add_argument("--format", choices=HASH_FORMATS, default="sri",
                   help="sri (sha256-...=, default), nix32 (as nix-hash --base32) or base16")
    return parser


def _cache_command(sub: argparse._SubParsersAction[_Parser]) -> None:
    text = "share store paths through an OCI registry (a build cache)"
    p = sub.add_parser("cache", help=text, description=text)
    _common(p, top=False)
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION", parser_class=_Parser,
                               required=True)
    text = ("build (or reuse) the recipe, then push its store paths (closure, deps, fetches, "
            "Debian toolchain) to the cache")
    p = actions.add_parser("push", help=text, description=text)
    _common(p, top=False)
    p.set_defaults(handler=commands.cmd_cache_push)
    _build_args(p, substituters=True)
    p.add_argument("--to", required=True, metavar="oci://HOST[:PORT]/REPO",
                   help="the registry repository to push to (HTTP for localhost and "
                        "127.0.0.1, HTTPS elsewhere; credentials from the docker config)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _build_args(p, substituters=True)
    p.add_argument("--cwd", type=Path, metavar="DIR",
                   help="run in this host folder, bound writable at its own path (default: "
                        "the closure's folder, read-only)")
    p.add_argument("--bind", action="append", default=[], type=parse_bind,
                   metavar="HOST[:DEST[:ro]]",
                   help="make a host folder visible at DEST (default: the same path), "
                        "writable unless ':ro' (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                   help="set a variable for the command (repeatable)")
    p.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                   help="pass a host variable to the command (repeatable)")


def parse_bind(text: str) -> Bind:
    """``HOST[:DEST[:ro]]`` for --bind; a relative HOST is taken from the working folder."""
    host, _, rest = text.partition(":")
    dest, _, mode = rest.partition(":")
    if not host or mode not in ("", "ro", "rw") or ":" in mode:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:DEST[:ro]] (e.g. --bind "
                                         "./data:/data or --bind /etc/app:/etc/app:ro)")
    if dest and not dest.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: DEST {dest!r} must be an absolute path")
    host_path = Path(host).absolute()
    if not host_path.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: {host_path} does not exist")
    return Bind(host=host_path, target=PurePosixPath(dest or host_path),
                writable=mode != "ro")


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` for --env; argparse turns the error into a usage error naming it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. --env PGHOST=db)")
    return key, value


def _build_args(p: argparse.ArgumentParser, *, substituters: bool = False) -> None:
    # A command that builds from a recipe: the recipe, the deps stage's uv cache, and for
    # the commands that realise store paths, the caches to fetch them from.
    _recipe_arg(p)
    _uv_cache_arg(p)
    if substituters:
        _substituter_arg(p)


def _recipe_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", type=Path, metavar="RECIPE",
                   help="venvseal.toml, pyproject.toml, or their folder (default: the nearest "
                        "one from the working folder up)")


def _update_hash_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--update-hash", action="store_true",
                   help="declare the deps stage's actual hash in the recipe (an empty one on "
                        "a first build, or a changed one; keeps its comments, says so) and "
                        "what it was built with in venvseal.lock")
    p.add_argument("--update-hash-on-drift", action="store_true",
                   help="--update-hash, but only when the toolchain (its packages, uv, the "
                        "interpreter) differs from the one venvseal.lock recorded; says what "
                        "moved")


def _uv_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uv-cache", type=Path, metavar="DIR",
                   help="persistent uv cache for the deps stage (default: $VENVSEAL_UV_CACHE "
                        "or ~/.cache/venvseal/uv); it never changes the output")


def _substituter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--substituter", action="append", metavar="oci://HOST[:PORT]/REPO",
                   help="fetch store paths from this cache instead of building them "
                        "(repeatable; default: $VENVSEAL_SUBSTITUTERS, space-separated)")
    p.add_argument("--cache-timeout", type=seconds, metavar="SECONDS",
                   help="the longest one request to a substituter may take before venvseal "
                        "builds instead (default: $VENVSEAL_CACHE_TIMEOUT or 300)")
