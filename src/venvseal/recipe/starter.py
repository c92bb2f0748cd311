"""A starter recipe for ``venvseal init``, read off the project's pyproject.toml and uv.lock.

Pure: the caller says which Python the host has (:class:`HostPython`) and writes the text
where it belongs. Each choice carries the reason, which ``init`` prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from venvseal.errors import UsageError
from venvseal.recipe.parse import project_metadata
from venvseal.recipe.tomlcheck import read_toml
from venvseal.recipe.uvlock import Lock

# Debian suites and the python3 each ships, oldest first: the first that meets
# requires-python is chosen (what a project needs, on the most settled suite).
DEBIAN_PYTHONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("bookworm", (3, 11)), ("trixie", (3, 13)), ("sid", (3, 14)))
# Where the code of a project that is not a package goes in the closure (on sys.path).
SITE = "app"
# Folders that hold a project's tests, docs or tooling, not its importable packages.
_NOT_PACKAGES = {"tests", "test", "docs", "doc", "examples", "scripts", "build", "dist"}
_CLAUSE = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*([0-9][0-9.]*)(\.\*)?\s*")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostPython:
    """The host's interpreter: its absolute path and version."""

    path: str
    version: tuple[int, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class Choice:
    """One thing ``init`` chose (``what``, as written in the recipe) and ``why``."""

    what: str
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Starter:
    """The recipe's tables as TOML (``prefix`` before each table name) and the choices."""

    text: str
    choices: tuple[Choice, ...]


def satisfies(version: tuple[int, ...], spec: str | None) -> bool:
    """Whether ``version`` meets a PEP 440 specifier set such as ``>=3.12,<3.15``
    (the clauses requires-python uses; an unreadable clause counts as met)."""
    for clause in (spec or "").split(","):
        match = _CLAUSE.fullmatch(clause)
        if not clause.strip() or match is None:
            continue
        op, text, wildcard = match.groups()
        want = tuple(int(p) for p in text.split("."))
        have = version[:len(want)] if wildcard or op in ("==", "!=", "===") else version
        have = tuple(have) + (0,) * max(0, len(want) - len(have))
        ok = {"==": have == want, "===": have == want, "!=": have != want,
              ">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want,
              "~=": have >= want and have[:len(want) - 1] == want[:-1]}[op]
        if not ok:
            return False
    return True


def top_level_packages(folder: Path) -> list[str]:
    """The importable packages a project ships: ``src/<name>/`` or ``<name>/`` with an
    ``__init__.py`` (the src layout first, as build backends look)."""
    for base in (folder / "src", folder):
        found = sorted(p.parent.name for p in base.glob("*/__init__.py")
                       if p.parent.name.isidentifier() and p.parent.name not in _NOT_PACKAGES)
        if found:
            return found
    return []


def _toolchain(requires: str | None, host: HostPython | None,
               builds: Sequence[str] = ()) -> tuple[list[str], Choice]:
    shown = requires or "any version"
    if host is not None and satisfies(host.version, requires):
        v = ".".join(map(str, host.version))
        return ([f'python = "{host.path}"'],
                Choice(what=f"toolchain: the host's {host.path} (Python {v})",
                       why=f"it meets requires-python ({shown}); nothing to download"))
    for suite, version in DEBIAN_PYTHONS:
        if satisfies(version, requires):
            v = "{}.{}".format(*version)
            have = (f"the host's Python {'.'.join(map(str, host.version))} does not"
                    if host is not None else "the host has no python3 that does")
            # binutils: the deps stage strips debug info with the toolchain's own strip;
            # gcc: uv builds the packages uv.lock has no wheel for (a minbase root has none).
            compiler = ', "gcc"' if builds else ""
            built = (f"; gcc for the packages uv.lock has no wheel for ({', '.join(builds)})"
                     if builds else "")
            return ([f'debian = {{ suite = "{suite}", packages = ["python{v}", '
                     f'"python{v}-dev", "binutils"{compiler}] }}',
                     f'python = "/usr/bin/python{v}"'],
                    Choice(what=f"toolchain: Debian {suite} (Python {v}), made once with "
                                "debootstrap",
                           why=f"requires-python is {shown} and {have}; {suite} is the "
                               f"oldest suite that ships a Python meeting it{built}"))
    raise UsageError(f"requires-python ({shown}) is met by neither the host's Python nor "
                     f"a Debian suite's ({', '.join(s for s, _ in DEBIAN_PYTHONS)}); write "
                     "[toolchain] by hand (see docs/recipe.md)")


def plan_starter(project: Path, lock: Lock, *, host: HostPython | None,
                 prefix: str = "") -> Starter:
    """The starter recipe for ``project`` (which holds pyproject.toml and uv.lock)."""
    pyproject = read_toml(project / "pyproject.toml")
    table = pyproject.get("project")
    meta = table if isinstance(table, dict) else {}
    lines: list[str] = []
    choices: list[Choice] = []
    known = project_metadata(project)
    if len(known) < 2:
        name = known.get("name") or project.name
        lines += [f"[{prefix}app]", f'name = "{name}"', 'version = "0.0.0"', ""]
        choices.append(Choice(what=f"[app] name {name!r}, version '0.0.0'",
                              why="pyproject.toml has no static [project] name and version; "
                                  "edit them"))
    else:
        choices.append(Choice(what=f"[app]: {known['name']} {known['version']}",
                              why="read from [project] (no [app] table needed)"))
    builds = sorted(p.name for p in lock.packages
                    if p.source_kind == "registry" and p.has_sdist and not p.has_wheels)
    tc_lines, choice = _toolchain(lock.requires_python or meta.get("requires-python"), host,
                                  builds)
    lines += [f"[{prefix}toolchain]", *tc_lines, ""]
    choices.append(choice)
    lines += [f"[{prefix}deps]", "# The NAR hash of the dependency venv; "
              "'venvseal build --update-hash' rewrites it.", 'hash = ""', ""]
    members = [m for m in lock.workspace_members()]
    assemble: list[str] = []
    if members:
        names = ", ".join(f'"{m.name}"' for m in members)
        assemble.append(f"workspace = [{names}]")
        choices.append(Choice(what=f"workspace members: {names}", why="uv.lock lists them"))
    root = lock.root_package()
    own = top_level_packages(project) if root and root.source_kind == "virtual" else []
    copies: list[str] = []
    if own:  # uv installs no root that is not a package: its code is copied, put on sys.path
        assemble.append(f'python-path = ["{SITE}"]')
        # src layout: all of src/ (a Django site keeps locale/ and manage.py beside its
        # packages there); else each package, not the project's other files.
        src = (project / "src" / own[0]).is_dir()
        for origin, target in [("src", SITE)] if src else [(p, f"{SITE}/{p}") for p in own]:
            copies += [f"[[{prefix}assemble.copy]]", f'from = "{origin}"', f'to = "{target}"',
                       ""]
        choices.append(Choice(what=f"{'src/' if src else ', '.join(own)} copied to {SITE}/, "
                                   "on sys.path",
                              why="the project is not a package (no [build-system], or "
                                  "tool.uv.package = false), so uv installs none of it"))
    if assemble:
        lines += [f"[{prefix}assemble]", *assemble, "", *copies]
    folders = [project, *(project / m.source for m in members)]
    packages = sorted({p for f in folders for p in top_level_packages(f)})
    if packages:
        lines += [f"[{prefix}verify]",
                  f"imports = [{', '.join(repr(p).replace(chr(39), chr(34)) for p in packages)}]",
                  ""]
        choices.append(Choice(what=f"verify imports: {', '.join(packages)}",
                              why="the project's own top-level packages; every build imports "
                                  "them with the closure's Python"))
    scripts = meta.get("scripts")
    if isinstance(scripts, dict) and scripts:
        script = sorted(scripts)[0]
        lines += [f"[{prefix}image]", f'entrypoint = ["@out@/bin/{script}"]', ""]
        choices.append(Choice(what=f"image entrypoint: @out@/bin/{script}",
                              why="[project.scripts] names it"
                                  + (f" (first of {len(scripts)}, by name)"
                                     if len(scripts) > 1 else "")))
    return Starter(text="\n".join(lines).rstrip() + "\n", choices=tuple(choices))
