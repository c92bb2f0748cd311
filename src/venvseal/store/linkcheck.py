"""Which symlinks a store path from elsewhere (a cache's NAR) may hold: a pure check.

A store path must not reach the host. A symlink in it may point:

- inside the path: a relative target whose leading ``..`` do not climb above the path's
  top, and with no ``..`` after its first name (``a/../..`` could climb further through a
  link named ``a`` than it seems to, so it is refused);
- into a store path the path declares as a reference (or itself): relative,
  ``../../<basename>/...`` climbing exactly to the store's folder and naming the basename
  next (the forests of the relinked deps and closures are made of these), or absolute,
  ``/venvseal/store/<basename>/...`` (:data:`~venvseal.store.core.STORE_DIR`);
- for venvseal's own interpreter links (``bin/python``, ``bin/python3``, ``bin/python3.X``
  of a closure) at the toolchain's interpreter: an absolute path whose last name is
  ``python`` followed by digits and dots, and no ``.`` or ``..`` names;
- anywhere, in a root file system (``root=True``: a Debian toolchain root, whose absolute
  links are meant inside the root, as in a chroot), except climbing above its top.

Anything else (``/etc/shadow``, ``../../../../etc``, a link to the store's folder itself) is
refused: :func:`link_problem` says why, or returns None.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath

from venvseal.store.core import STORE_DIR

_INTERPRETER_LINK = re.compile(r"bin/python(?:3(?:\.[0-9]+)?)?")
_INTERPRETER = re.compile(r"python[0-9.]*")


@dataclass(frozen=True, slots=True)
class LinkRule:
    """What links of one store path may reach: ``self_name`` and ``references`` (store
    basenames), and whether the path is a root file system (``root``)."""

    self_name: str
    references: frozenset[str] = frozenset()
    root: bool = False

    def may_enter(self, name: str) -> bool:
        """Whether links may lead into the store path ``name`` (a basename)."""
        return name == self.self_name or name in self.references


def link_problem(rule: LinkRule, where: PurePosixPath, target: str) -> str | None:
    """Why the symlink at ``where`` (relative to the path's top; ``.`` for the path
    itself) may not point at ``target``, or None if it may."""
    parts = target.split("/")
    if target.startswith("/"):
        return _absolute(rule, where, parts[1:], target)
    # The folder holding the link, counted in levels below the store's folder (the path's
    # top is level 1; a path that is itself a link sits at level 0).
    level = len(where.parts) if where != PurePosixPath(".") else 0
    names = [p for p in parts if p not in ("", ".")]
    ups = 0
    while ups < len(names) and names[ups] == "..":
        ups += 1
    rest = names[ups:]
    if ".." in rest:
        return "it has '..' after a name"
    if ups < level:
        return None  # stays inside the path
    if rule.root:
        return "it climbs out of the root file system"
    if ups > level:
        return "it climbs out of the store"
    if not rest:
        return "it points at the store's folder"
    if not rule.may_enter(rest[0]):
        return f"it leads into {rest[0]!r}, which the path does not declare as a reference"
    return None


def _absolute(rule: LinkRule, where: PurePosixPath, names: list[str], target: str) -> str | None:
    if ".." in names:
        return "it has '..' in an absolute target"
    if rule.root:
        return None  # inside the root, as in a chroot
    clean = [n for n in names if n not in ("", ".")]
    store = list(STORE_DIR.parts[1:])
    if clean[:len(store)] == store and len(clean) > len(store):
        name = clean[len(store)]
        if rule.may_enter(name):
            return None
        return f"it leads into {name!r}, which the path does not declare as a reference"
    if (_INTERPRETER_LINK.fullmatch(where.as_posix()) and clean
            and _INTERPRETER.fullmatch(clean[-1]) and "." not in names and "" not in names):
        return None  # a closure's bin/python -> the toolchain's interpreter
    return f"it is absolute ({target!r}), outside the store paths the path may use"


def check_links(rule: LinkRule, links: Collection[tuple[PurePosixPath, str]]) -> list[str]:
    """Every problem of ``links`` ((where, target) pairs), one line each."""
    return [f"symlink {where} -> {target}: {problem}" for where, target in links
            if (problem := link_problem(rule, where, target)) is not None]
