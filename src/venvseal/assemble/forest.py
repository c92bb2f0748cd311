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
import stat
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
        """Make ``rel`` and every folder above it real folders (of links, where linked).

        ``rel`` must be resolved (:meth:`relative`): every folder on the way is a real
        folder or a forest link, never another symlink, which the checks here refuse too.
        """
        for depth in range(1, len(rel.parts) + 1):
            sub = PurePosixPath(*rel.parts[:depth])
            if self.is_link(sub):
                if not stat.S_ISDIR(os.lstat(self.base / sub).st_mode):
                    raise ForestError(f"{self.base / sub} is not a folder; the closure cannot "
                                      f"put anything inside {sub}")
                os.unlink(self.out / sub)
                os.mkdir(self.out / sub, 0o755)
                self.plant(sub)
            elif _is_symlink(self.out / sub):
                raise ForestError(f"{sub} in the closure is a symlink; venvseal writes only "
                                  "into real folders of the closure")

    def _own_links(self, links: tuple[PurePosixPath, ...]) -> None:
        """Unfold the folder of each symlink a path went through, so each becomes the
        closure's own and resolves inside the closure (a symlink in a linked folder resolves
        inside the base)."""
        for link in links:
            self.unfold(link.parent)

    def own_dir(self, path: Path) -> Path:
        """The closure folder ``path``, made a real folder (created if absent); returns its
        resolved path, through real folders only."""
        rel, links = self.resolve(path)
        self._own_links(links)
        self.unfold(rel)
        folder = self.out / rel
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def own_file(self, path: Path) -> Path:
        """Make ``path`` a writable file of the closure's own before it is edited; returns
        its resolved path, through real folders only.

        A linked file becomes a copy; a file of the closure's own is replaced by a copy too,
        which breaks any hard link (root may write read-only files). Neither the source nor
        the copy is ever reached through a symlink (fsutil.copy_over opens them no-follow).
        A module's compiled bytecode, inherited from the base, goes: it would not match the
        edited source.
        """
        rel, links = self.resolve(path)
        self._own_links(links)
        self.unfold(rel.parent)
        dest = self.out / rel
        try:
            fsutil.copy_over(self.base / rel if self.is_link(rel) else dest, dest,
                             writable=True)
        except OSError as err:
            raise ForestError(f"{path} cannot be made the closure's own: {rel} is not a "
                              f"regular file in it ({err.strerror})") from err
        if rel.suffix == ".py":
            self.drop_bytecode(rel)
        return dest

    def drop_bytecode(self, rel: PurePosixPath) -> None:
        """Remove the ``__pycache__`` entries of module ``rel`` (unfolding that folder)."""
        cache = rel.parent / "__pycache__"
        if not os.path.lexists(self.out / cache):
            return
        self.unfold(cache)
        if not stat.S_ISDIR(os.lstat(self.out / cache).st_mode):
            return
        for name in os.listdir(self.out / cache):
            if name.startswith(f"{rel.stem}.") and name.endswith(".pyc"):
                os.unlink(self.out / cache / name)

    def contains(self, path: Path) -> bool:
        """Whether ``path`` stays in the closure; a link to the base counts as in it."""
        try:
            self.resolve(path)
        except ForestError:
            return False
        return True

    def relative(self, path: Path) -> PurePosixPath:
        """``path`` relative to the closure, every symlink on the way followed (see
        :meth:`resolve`), so the folders unfolded are the ones the path really goes through."""
        return self.resolve(path)[0]

    def resolve(self, path: Path) -> tuple[PurePosixPath, tuple[PurePosixPath, ...]]:
        """``path`` relative to the closure, and the symlinks it went through.

        A link chain is resolved one component at a time, as the kernel does, and every
        step is checked again: a symlink that is absolute or climbs out of the closure is
        refused, whatever it is reached through (``django/__init__.py -> ../djx/__init__.py``
        then ``djx -> /srv``). A forest link stands for the base's entry; the base's own
        symlinks below it are resolved as if at the same place in the closure, which is
        where they resolve once :meth:`own_file` has made them the closure's own.
        """
        norm = Path(os.path.normpath(path))
        if not norm.is_relative_to(self.out):
            raise self._outside(path, None)
        pending = list(PurePosixPath(norm).relative_to(self.out).parts)
        done: list[str] = []
        links: list[PurePosixPath] = []
        in_base = False  # below a forest link: entries are the base's
        while pending:
            done.append(pending.pop(0))
            here = PurePosixPath(*done)
            if not _is_symlink(self.out / here):
                continue
            if not in_base and self.is_link(here):
                in_base = True
                continue
            target = os.readlink(self.out / here)
            rebased = Path(os.path.normpath(self.out / here.parent / target))
            links.append(here)
            if len(links) > _MAX_HOPS:
                raise ForestError(f"{path}: too many levels of symlinks (a loop at {here}); "
                                  "change the recipe to name a path inside the closure")
            if os.path.isabs(target) or not rebased.is_relative_to(self.out):
                raise self._outside(path, f"{here} -> {target}")
            pending = list(PurePosixPath(rebased).relative_to(self.out).parts) + pending
            done, in_base = [], False
        return PurePosixPath(*done), tuple(links)

    def _outside(self, path: Path, through: str | None) -> ForestError:
        via = f" (through the symlink {through})" if through else ""
        return ForestError(f"{path} leads outside the closure {self.out}{via}; change the "
                           "recipe to name a path inside it")


def _is_symlink(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
