"""A toolchain root's installed Debian packages, from its dpkg database.

For a host root, venvseal.lock records the packages a build of Python dependencies reads:
headers and the libraries they stand for (every ``-dev`` package), compilers and binutils,
the C library, build tools, the interpreter, and everything these depend on (``Depends`` and
``Pre-Depends``, through ``Provides``). Which files uv's builds open is not observed; this
is the set that holds them on Debian (deb-policy: ``-dev`` packages carry headers and the
unversioned ``.so`` links), and a package outside it that still changes the output shows as
a changed toolchain identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from venvseal.toolchain.deb822 import stanzas

STATUS = Path("var/lib/dpkg/status")
# Compilers, binutils, build tools, the C library and Python: each with its versioned names
# (gcc-12, cpp-12, python3.11, libpython3.11-dev) and Debian's parts (binutils-common).
_BUILD_TOOLS = re.compile(
    r"(?:gcc|g\+\+|cpp|clang|gfortran|rustc|cargo|llvm)(?:-\d+(?:\.\d+)?)?"
    r"|binutils(?:-.+)?|libc6|libc-bin|libc-dev-bin|make|cmake|ninja-build|pkg-config|pkgconf"
    r"|patchelf|(?:lib)?python3(?:\.\d+)?(?:-minimal|-stdlib|-dev|-venv)?")


@dataclass(frozen=True, kw_only=True, slots=True)
class Package:
    """One installed package: its version and the names it depends on or provides."""

    name: str
    version: str
    depends: tuple[str, ...]  # every alternative of Depends and Pre-Depends, names only
    provides: tuple[str, ...]


def _names(field: str) -> tuple[str, ...]:
    """Package names in a relationship field: "a (>= 1) | b:any, c" -> (a, b, c)."""
    names = []
    for part in re.split(r"[,|]", field):
        name = part.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
        if name:
            names.append(name)
    return tuple(names)


def parse_status(text: str) -> dict[str, Package]:
    """Installed packages of a dpkg status file, by name (``name:arch`` where several
    architectures of one name are installed)."""
    found: list[tuple[str, str, Package]] = []
    for fields in stanzas(text):
        if fields.get("status", "").split()[-1:] != ["installed"] or "package" not in fields:
            continue
        name = fields["package"]
        found.append((name, fields.get("architecture", ""), Package(
            name=name, version=fields.get("version", ""),
            depends=_names(fields.get("pre-depends", "")) + _names(fields.get("depends", "")),
            provides=_names(fields.get("provides", "")))))
    count: dict[str, int] = {}
    for name, _arch, _pkg in found:
        count[name] = count.get(name, 0) + 1
    return {(name if count[name] == 1 else f"{name}:{arch}"): pkg
            for name, arch, pkg in sorted(found, key=lambda f: (f[0], f[1]))}


def installed(root: Path) -> dict[str, Package]:
    """The packages installed in the toolchain root (none without a dpkg database)."""
    try:
        text = (root / STATUS).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return parse_status(text)


def build_packages(packages: Mapping[str, Package]) -> dict[str, Package]:
    """The packages a build reads: -dev packages, compilers, libc, Python, and what they
    depend on."""
    by_name: dict[str, list[str]] = {}
    for key, pkg in packages.items():
        for name in (pkg.name, *pkg.provides):
            by_name.setdefault(name, []).append(key)
    todo = [key for key, pkg in packages.items()
            if pkg.name.endswith("-dev") or _BUILD_TOOLS.fullmatch(pkg.name)]
    chosen: set[str] = set()
    while todo:
        key = todo.pop()
        if key in chosen:
            continue
        chosen.add(key)
        todo.extend(k for dep in packages[key].depends for k in by_name.get(dep, ()))
    return {key: packages[key] for key in sorted(chosen)}
