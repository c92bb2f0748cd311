"""``[verify] import-all``: the modules the installed distributions provide, from their RECORDs.

A distribution's top-level names are what a user imports: ``six.py`` gives ``six``, an
extension ``_cffi_backend.cpython-311-x86_64-linux-gnu.so`` gives ``_cffi_backend``, a folder
with ``__init__.py`` gives its name. A namespace package (PEP 420) has no ``__init__.py``;
its portions do, one level or more down (``google/protobuf/__init__.py``): each portion is
imported by its dotted name (``google.protobuf``). What cannot be imported that way is listed
with the reason, so a user sees what import-all left out.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

INIT = ("__init__.py", "__init__.pyi")


@dataclass(frozen=True, kw_only=True, slots=True)
class Importable:
    """The modules import-all imports, and what it skipped with why."""

    modules: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, why), sorted


def record_paths(site_packages: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every site-packages-relative path the installed RECORDs list, as parts, with the
    distribution (normalised name, PEP 503) that lists it."""
    paths: list[tuple[str, tuple[str, ...]]] = []
    for record in sorted(site_packages.glob("*.dist-info/RECORD")):
        dist = _normalise(record.parent.name.split("-", 1)[0])
        with record.open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                if row and row[0] and not row[0].startswith(("/", "..")):
                    paths.append((dist, PurePosixPath(row[0]).parts))
    return paths


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _namespaces(paths: list[tuple[str, tuple[str, ...]]],
                packages: set[tuple[str, ...]]) -> dict[str, str]:
    """Top-level folders without ``__init__.py`` that are not namespace packages, with the
    distribution shipping each. A namespace is shared by several distributions (``google``)
    or starts its one distribution's name (``opentelemetry`` of opentelemetry-api); any other
    such folder is most likely examples or tests shipped by mistake (django-tenants'
    ``examples``)."""
    owners: dict[str, set[str]] = {}
    for dist, parts in paths:
        if len(parts) > 1 and parts[:1] not in packages:
            owners.setdefault(parts[0], set()).add(dist)
    return {top: next(iter(dists)) for top, dists in owners.items()
            if len(dists) == 1 and not any(f"{d}-".startswith(f"{_normalise(top)}-")
                                           for d in dists)}


def _module_file(name: str) -> str | None:
    """The module a file at the top of a package or namespace folder gives, if any."""
    if name.endswith(".py"):
        return name[:-3]
    if name.endswith(".so"):
        return name.split(".", 1)[0]
    return None


NAMESPACE_ONLY = ("a namespace folder with modules but no package; name its modules in "
                  "[verify] imports")


def find_importable(site_packages: Path, skip: Sequence[str] = ()) -> Importable:
    """The modules of every installed distribution, less ``skip``; see the module doc."""
    paths = record_paths(site_packages)
    packages = {p[:-1] for _, p in paths if len(p) > 1 and p[-1] in INIT}
    stray = _namespaces(paths, packages)
    found: set[str] = set()
    skipped: dict[str, str] = {}
    for _, parts in paths:
        if parts[0].endswith((".dist-info", ".data")) or "__pycache__" in parts:
            continue
        name = _name_of(parts, packages)
        if name is None:
            continue
        if not all(part.isidentifier() for part in name):
            if parts[-1].endswith(".py"):  # (a .so in such a folder is a shared library)
                skipped[".".join(name)] = "not an importable name"
        elif len(name) > 1 and name[0] in stray:
            skipped[name[0]] = (f"a folder without __init__.py that only {stray[name[0]]} "
                                "ships, not named after it (examples or tests, most likely); "
                                "name its modules in [verify] imports to import them")
        elif len(name) > 1 and name not in packages:
            skipped[".".join(name[:-1])] = NAMESPACE_ONLY
        else:
            found.add(".".join(name))
    for module in skip:
        if module in found:
            found.discard(module)
            skipped[module] = "in [verify] import-skip"
    return Importable(modules=tuple(sorted(found)),
                      skipped=tuple(sorted((k, v) for k, v in skipped.items()
                                           if k not in found)))


def _name_of(parts: tuple[str, ...], packages: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The importable name a RECORD path leads to: the first package on its way, or the
    module file itself when only namespace folders lie before it."""
    for depth in range(1, len(parts)):
        if parts[:depth] in packages:
            return parts[:depth]
    module = _module_file(parts[-1])
    return None if module is None else (*parts[:-1], module)


def top_level_modules(site_packages: Path, skip: Sequence[str] = ()) -> list[str]:
    """The importable names of :func:`find_importable`, as a list."""
    return list(find_importable(site_packages, skip).modules)
