"""A closure's view of the store path it builds on: a forest of relative symlinks.

The assembly stage does not copy the dependencies into every closure. It plants, for each
top-level entry of the relinked deps path, a relative symlink to it (``../<deps>/<entry>``,
as Nix's buildEnv does with absolute ones), and unfolds a linked folder into a real folder
of links only where the closure puts or changes something inside it. An app edit then
rewrites a few hundred entries, not 31,000 files, and the deps path stays one unit that
every closure and image of the same dependencies shares.

A link at ``<closure>/a/b`` reads ``../../<deps>/a/b``, so it resolves wherever the two paths
sit side by side: in the store, at their logical paths in the sandbox and in an image, and
in a build's temp dir (see ``Store._build``). Python sees one site-packages; the dynamic
loader's ``$ORIGIN`` is the folder a library was opened through, and since the forest mirrors
the deps tree, every ``$ORIGIN``-relative run path finds the same files through it.

Nothing here writes into the deps path: every change goes through :meth:`Forest.own_dir` or
:meth:`Forest.own_file`, which first turn the entries on the way into the closure's own.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from venvseal import fsutil
from venvseal.errors import VenvsealError

TOP = PurePosixPath()  # the closure's own top folder, as a relative path
_MAX_HOPS = 40  # as the kernel's limit on symlinks followed in one path lookup


class ForestError(VenvsealError):
    """A path the assembly wants to change leads outside the closure."""


class Forest:
    """The closure being built at ``out``, linked to the store path ``base`` (host path)."""

    def __init__(self, out: Path, base: Path) -> None:
        self.out = out
        self.base = base

    def target(self, rel: PurePosixPath) -> str:
        """What the link for ``rel`` reads: up to the store root, then into the base."""
        return "../" * len(rel.parts) + f"{self.base.name}/{rel.as_posix()}"

    def is_link(self, rel: PurePosixPath) -> bool:
        """Whether ``rel`` in the closure is a link the forest planted (not the closure's own)."""
        try:
            return os.readlink(self.out / rel) == self.target(rel)
        except OSError:  # absent, or not a symlink
            return False

    def plant(self, rel: PurePosixPath = TOP, *, skip: tuple[str, ...] = ()) -> None:
        """Mirror the base folder ``rel`` into the closure folder ``rel`` (which must exist).

        Symlinks of the base are copied as they are (relative ones resolve the same way in
        the mirror); everything else gets a forest link. ``skip`` names entries left out.
        """
        folder = self.base / rel
        for name in sorted(os.listdir(folder)):
            if name in skip:
                continue
            entry = rel / name
            if os.path.islink(folder / name):
                os.symlink(os.readlink(folder / name), self.out / entry)
            else:
                os.symlink(self.target(entry), self.out / entry)

    def unfold(self, rel: PurePosixPath) -> None:
        """Make ``rel`` and every folder above it real folders (of links, where linked)."""
        for depth in range(1, len(rel.parts) + 1):
            sub = PurePosixPath(*rel.parts[:depth])
            if self.is_link(sub):
                os.unlink(self.out / sub)
                os.mkdir(self.out / sub, 0o755)
                self.plant(sub)

    def own_dir(self, path: Path) -> Path:
        """The closure folder ``path``, made a real folder (created if absent)."""
        rel = self.relative(path)
        self.unfold(rel)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def own_file(self, path: Path) -> Path:
        """Make ``path`` a writable file of the closure's own before it is edited.

        A linked file becomes a copy; a file of the closure's own is replaced by a copy too,
        which breaks any hard link (root may write read-only files). A module's compiled
        bytecode, inherited from the base, goes: it would not match the edited source.
        """
        rel = self.relative(path)
        self.unfold(rel.parent)
        fsutil.copy_over(self.base / rel if self.is_link(rel) else path, path, writable=True)
        if rel.suffix == ".py":
            self.drop_bytecode(rel)
        return path

    def drop_bytecode(self, rel: PurePosixPath) -> None:
        """Remove the ``__pycache__`` entries of module ``rel`` (unfolding that folder)."""
        cache = rel.parent / "__pycache__"
        if not os.path.isdir(self.out / cache):
            return
        self.unfold(cache)
        for name in os.listdir(self.out / cache):
            if name.startswith(f"{rel.stem}.") and name.endswith(".pyc"):
                os.unlink(self.out / cache / name)

    def contains(self, path: Path) -> bool:
        """Whether ``path`` stays in the closure; a link to the base counts as in it."""
        try:
            self.relative(path)
        except ForestError:
            return False
        return True

    def relative(self, path: Path) -> PurePosixPath:
        """``path`` relative to the closure, with the base's own symlinks (``lib64 -> lib``)
        followed, so the folders unfolded are the ones the path really goes through."""
        if not Path(os.path.normpath(path)).is_relative_to(self.out):
            raise ForestError(f"{path} leads outside the closure {self.out}; change the "
                              "recipe to name a path inside it")
        pending = list(PurePosixPath(os.path.normpath(path)).relative_to(self.out).parts)
        done: list[str] = []
        hops = 0
        while pending:
            done.append(pending.pop(0))
            here = PurePosixPath(*done)
            if not os.path.islink(self.out / here) or self.is_link(here):
                continue
            hops += 1
            target = Path(os.path.normpath(self.out.joinpath(*done[:-1],
                                                             os.readlink(self.out / here))))
            if hops > _MAX_HOPS or not target.is_relative_to(self.out):
                raise ForestError(f"{path} leads outside the closure {self.out} (through "
                                  f"the symlink {here}); change the recipe to name a path "
                                  "inside it")
            done = list(target.relative_to(self.out).parts)
        return PurePosixPath(*done)
