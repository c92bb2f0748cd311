"""``[[substitute]]``: literal replacements and unified-diff patches in closure files.

A replacement whose text is absent fails, naming the file and the text: a silent no-op would
hide that upstream changed the file the recipe patches (Nix's ``--replace-fail``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from venvseal import process
from venvseal.errors import CommandError, VenvsealError
from venvseal.recipe.model import Recipe, Substitute

_PLACEHOLDER = re.compile(r"@([A-Za-z0-9][A-Za-z0-9._-]*)@")


class SubstituteError(VenvsealError):
    """A substitution or patch could not be applied."""


def expand(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every known ``@name@`` replaced by its value (others are left)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


class Editable(Protocol):
    """The closure being assembled, as substitutions see it (forest.Forest)."""

    def contains(self, path: Path) -> bool:
        """Whether ``path`` stays in the closure (its links to the deps path count as in)."""

    def own_file(self, path: Path) -> Path:
        """Make ``path`` a writable file of the closure's own; return it."""

    def own_dir(self, path: Path) -> Path:
        """Make the folder ``path`` the closure's own (created if absent); return it."""


def closure_file(out: Path, rel: str, site_packages: str, *, where: str,
                 closure: Editable) -> Path:
    """The closure file ``rel`` names, refusing paths that leave the closure."""
    path = out / rel.replace("@site-packages@", site_packages)
    if not closure.contains(path):
        raise SubstituteError(f"{where}: {rel} leads outside the closure; name a file in it")
    if not path.is_file():
        raise SubstituteError(f"{where}: {rel} is not a file in the closure; check the path "
                              "(copy rules run before substitutions)")
    return path


def apply_text(sub: Substitute, out: Path, values: Mapping[str, str], site_packages: str,
               *, where: str, closure: Editable) -> Path:
    """Replace ``sub.replace`` with the expanded ``sub.with_`` in ``sub.file``."""
    assert sub.file is not None and sub.replace is not None and sub.with_ is not None
    path = closure_file(out, sub.file, site_packages, where=f"{where}.file", closure=closure)
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    found = text.count(sub.replace)
    if found == 0:
        raise SubstituteError(f"{where}: {sub.replace!r} not found in {sub.file}; the file "
                              "changed upstream: update the recipe's replace text")
    if sub.count is not None and found != sub.count:
        raise SubstituteError(f"{where}: {sub.replace!r} occurs {found} times in {sub.file}, "
                              f"the recipe expects {sub.count}; update count or the text")
    new = text.replace(sub.replace, expand(sub.with_, values))
    closure.own_file(path).write_bytes(new.encode("utf-8", "surrogateescape"))
    return path


# Every kind of line in which GNU patch may find a file name: unified and context diff
# headers, git's extended headers (rename and copy name files with no a/ b/ prefix; patch
# strips them anyway) and the Index: line of older diffs.
_HEADERS = ("+++ ", "--- ", "*** ", "Index: ", "rename from ", "rename to ", "copy from ",
            "copy to ")
_GIT_DIFF = re.compile(r'^diff --git ("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)\s*$')
_CONTEXT_HUNK = re.compile(r"^(\*\*\*|---) \d+(,\d+)? (\*\*\*\*|----)\s*$")


def _unquote(name: str) -> str:
    """A file name as git writes it: C-quoted when it has unusual characters."""
    if len(name) > 1 and name[0] == name[-1] == '"':
        return name[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    return name


def header_names(text: str) -> list[tuple[str, bool]]:
    """Every file name the diff ``text`` names in any header, as written (not stripped),
    with whether patch strips it (git's rename/copy lines have no a/ b/ prefix)."""
    names: list[tuple[str, bool]] = []
    for line in text.splitlines():
        if _CONTEXT_HUNK.match(line):
            continue
        if m := _GIT_DIFF.match(line):
            names += [(_unquote(m[1]), True), (_unquote(m[2]), True)]
            continue
        for head in _HEADERS:
            if line.startswith(head):
                name = _unquote(line[len(head):].split("\t")[0].strip())
                if name and name != "/dev/null":
                    names.append((name, head.endswith(("--- ", "+++ ", "*** ", "Index: "))))
    return names


def _patched_files(patch: Path, strip: int) -> tuple[list[str], list[str]]:
    """The files the patch may write, as patch finds them (stripped of ``strip`` leading
    components), and every name in any header as written: all are checked to stay in the
    closure, the first are made the closure's own."""
    written: set[str] = set()
    named: set[str] = set()
    for name, stripped in header_names(patch.read_text(encoding="utf-8", errors="replace")):
        named.add(name)
        if stripped:
            written.add("/".join(name.split("/")[strip:]) or name)
    return sorted(written), sorted(named | written)


def apply_patch(sub: Substitute, out: Path, *, where: str, closure: Editable) -> set[Path]:
    """Apply the unified diff ``sub.patch`` to the closure with ``patch -p<strip>``."""
    assert sub.patch is not None
    written, named = _patched_files(sub.patch, sub.strip)
    for rel in named:
        if not closure.contains(out / rel):
            raise SubstituteError(f"{where}.patch: {sub.patch.name} touches {rel}, outside the "
                                  "closure; fix the patch or its strip level")
    targets = []
    for rel in sorted(set(written) | {r for r in named if os.path.lexists(out / r)}):
        path = out / rel
        if path.is_file():
            targets.append(closure.own_file(path))
        else:  # a file the patch creates: its folder must not be a link into the deps
            targets.append(closure.own_dir(path.parent) / path.name)
    tool = process.find_tool("patch", "patch")
    try:
        process.run([tool, f"-p{sub.strip}", "--batch", "--forward", "--no-backup-if-mismatch",
                     "-d", str(out), "-i", str(sub.patch)], what=f"{where}: patch")
    except CommandError as err:
        raise SubstituteError(f"{where}: {sub.patch.name} does not apply to the closure:\n"
                              f"{err.output_tail}") from err
    return {p for p in targets if p.is_file()}


def apply_all(rec: Recipe, out: Path, values: Mapping[str, str], site_packages: str, *,
              closure: Editable) -> set[Path]:
    """Apply every ``[[substitute]]`` in order; the closure files changed."""
    changed: set[Path] = set()
    for i, sub in enumerate(rec.substitute):
        where = f"{rec.key_prefix}substitute[{i}]"
        if sub.kind == "text":
            changed.add(apply_text(sub, out, values, site_packages, where=where, closure=closure))
        else:
            changed |= apply_patch(sub, out, where=where, closure=closure)
    return {Path(os.path.normpath(p)) for p in changed}
