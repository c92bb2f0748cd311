"""Console and GUI scripts: read from ``entry_points.txt``, written as ``bin/`` launchers.

The launchers are the ones pip and uv write on POSIX (a shebang line, an import and a call),
byte for byte the same for the same input. ``entry_points.txt`` comes from wheels, so it is
untrusted: names and import paths are validated before they go into a file or a path.
"""

from __future__ import annotations

import configparser
import keyword
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from venvseal.assemble.forest import Forest
from venvseal.deps.scripts import parse_entry_points, write_interpreter
from venvseal.errors import LocatedError

ScriptKind = Literal["console", "gui"]
_SECTIONS: dict[str, ScriptKind] = {"console_scripts": "console", "gui_scripts": "gui"}
# The entry point grammar of importlib.metadata is module[:attr] [extras]; extras only name
# optional dependencies, which a launcher ignores.
_EXTRAS = re.compile(r"\[[^\]]*\]\s*$")
# Linux reads at most 127 characters of a shebang line on older kernels (BINPRM_BUF_SIZE).
_SHEBANG_MAX = 127


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryPoint:
    """One script: ``name`` runs ``module:attr`` (the module itself as __main__ if attr is None)."""

    name: str
    module: str
    attr: str | None  # may be dotted: "cli.main" is attribute main of module attribute cli
    kind: ScriptKind
    distribution: str  # normalised as in PEP 503


class EntryPointError(LocatedError):
    """A distribution's entry points cannot be turned into scripts."""


def read_entry_points(site_packages: Path) -> tuple[EntryPoint, ...]:
    """Every console and gui script of every distribution in ``site_packages``, by name.

    Two distributions (or two sections of one) defining the same script name is an
    :class:`EntryPointError` naming both, as is a malformed ``entry_points.txt``.
    """
    found: dict[str, EntryPoint] = {}
    for dist_info in sorted(site_packages.glob("*.dist-info")):
        file = dist_info / "entry_points.txt"
        if not file.is_file():
            continue
        for point in _read_file(file, distribution_name(dist_info.name)):
            other = found.get(point.name)
            if other is not None:
                raise EntryPointError(
                    f"script {point.name!r}",
                    f"defined by distribution {other.distribution} and by {point.distribution}",
                    "exclude one of them ([deps] exclude) so that bin/ has one owner per name")
            found[point.name] = point
    return tuple(found[name] for name in sorted(found))


def distribution_name(dist_info: str) -> str:
    """The PEP 503 name of the distribution a ``<name>-<version>.dist-info`` folder holds."""
    name = dist_info.removesuffix(".dist-info").partition("-")[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_file(file: Path, distribution: str) -> list[EntryPoint]:
    where = f"{file.parent.name}/{file.name} (distribution {distribution})"
    hint = "the distribution is broken: report it upstream, or exclude it ([deps] exclude)"
    try:
        parser = parse_entry_points(file.read_text(encoding="utf-8"), str(file))
    except (configparser.Error, UnicodeDecodeError) as err:
        problem = str(err).replace("\n", " ")
        raise EntryPointError(where, f"cannot be read: {problem}", hint) from err
    points = []
    for section, kind in _SECTIONS.items():
        if not parser.has_section(section):
            continue
        for name, value in parser.items(section):
            module, colon, attr_text = _EXTRAS.sub("", value).partition(":")
            module, attr = module.strip(), attr_text.strip() if colon else None
            for what, text in (("module", module), ("attribute", attr)):
                if text is not None and not _is_dotted_name(text):
                    raise EntryPointError(
                        where, f"[{section}] {name} = {value!r}: {text!r} is not a dotted "
                        f"Python {what} name", hint)
            points.append(EntryPoint(name=name, module=module, attr=attr, kind=kind,
                                     distribution=distribution))
    return points


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in text.split("."))


def write_scripts(bin_dir: Path, entry_points: Iterable[EntryPoint], *,
                  python: str) -> tuple[Path, ...]:
    """Write one launcher (mode 0o755) per entry point into ``bin_dir``; their paths.

    ``python`` is the interpreter on the shebang line, as the script will find it at run time.
    A name that is not a plain file name, or that is already in ``bin_dir`` (the interpreter,
    say), is refused rather than written.
    """
    if not python.startswith("/") or len(python) > _SHEBANG_MAX or re.search(r"\s", python):
        raise EntryPointError(f"interpreter {python!r}", "cannot go on a shebang line",
                              f"use an absolute path of at most {_SHEBANG_MAX} characters "
                              "without spaces")
    written = []
    for point in entry_points:
        _check_script_name(point, bin_dir)
        path = bin_dir / point.name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        except FileExistsError:
            raise EntryPointError(
                f"script {point.name!r} of distribution {point.distribution}",
                f"{path} exists already", "rename or exclude one of them") from None
        with os.fdopen(fd, "wb") as file:
            file.write(launcher(point, python).encode("utf-8"))
        os.chmod(path, 0o755)  # explicitly: the process umask must not change the output
        written.append(path)
    return tuple(written)


def link_shipped(closure: Forest, python: str) -> tuple[frozenset[Path], set[Path]]:
    """The base's (the deps path's) ``bin/`` files, what its distributions ship there
    (deps/scripts.py), linked into the closure's ``bin/`` where they are not (installing the
    local packages removes ``bin/``); a ``#!python`` placeholder among them is made the
    closure's own copy naming ``python``. Their paths in the closure, and those edited."""
    base = closure.base / "bin"
    # Files and links only: a folder there (a __pycache__ an older relinked deps compiled
    # for a shipped .py script) is no program.
    names = sorted(name for name in os.listdir(base)
                   if not stat.S_ISDIR(os.lstat(base / name).st_mode)) if base.is_dir() else []
    bin_dir = closure.own_dir(closure.out / "bin")
    for name in names:
        rel = PurePosixPath("bin", name)
        if not os.path.lexists(bin_dir / name):
            os.symlink(closure.target(rel), bin_dir / name)
        elif not closure.is_link(rel):
            raise EntryPointError(f"bin/{name}", "is installed both by a dependency and by a "
                                  "local package", "exclude one of them ([deps] exclude or "
                                  "[assemble] workspace)")
    shipped = frozenset(bin_dir / name for name in names)
    return shipped, write_interpreter(shipped, python, closure.own_file)


def _check_script_name(point: EntryPoint, bin_dir: Path) -> None:
    name = point.name
    if not name or "/" in name or name.startswith(".") or "\0" in name or name != name.strip():
        raise EntryPointError(
            f"script {name!r} of distribution {point.distribution}",
            "is not a plain file name (it is empty, has '/' or surrounding spaces, or starts "
            f"with '.') and would not stay in {bin_dir}",
            "the distribution is broken: report it upstream, or exclude it ([deps] exclude)")


def launcher(point: EntryPoint, python: str) -> str:
    """The launcher's text: uv's POSIX template (pip's differs only in its argv[0] regex)."""
    if point.attr is None:  # no callable: run the module as `python -m module` would
        imports = "import runpy"
        call = f'runpy.run_module("{point.module}", run_name="__main__", alter_sys=True)'
    else:  # a dotted attribute is reached from its first part
        imports = f"from {point.module} import {point.attr.split('.')[0]}"
        call = f"sys.exit({point.attr}())"
    return _lines((f"#!{python}", "import sys", imports, 'if __name__ == "__main__":',
                   *_ARGV0_FIX, f"    {call}"))


# pip and uv drop the suffixes Windows launchers add, so argv[0] reads the same everywhere.
_ARGV0_FIX = (
    '    if sys.argv[0].endswith("-script.pyw"):',
    "        sys.argv[0] = sys.argv[0][:-11]",
    '    elif sys.argv[0].endswith(".exe"):',
    "        sys.argv[0] = sys.argv[0][:-4]",
)


def _lines(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)
