"""Sealing a tree while the NAR walk passes over it: one walk instead of two.

:func:`venvseal.fsutil.seal_tree` walks a tree to make it read-only with the canonical time,
and the NAR hash walks it again. Done in the hash's walk, each entry is sealed through the
descriptor the walk already holds (``fchmod``/``futimens``, no second path lookup): on the
demo's 6,400-entry venv the separate seal walk cost 0.3-0.4 s, a third of the deps stage's
own work (issue 16). The result is the same as :func:`~venvseal.fsutil.seal_tree`'s, rule for
rule: a file already sealed (a hard link into another store path) is left alone, any other
file with several links is copied first, directories are sealed after their entries. The
top folder alone keeps its owner's write permission, as the store's publishing step wants it:
rename(2) moves a folder into another parent only if the folder itself is writable.

Sealing keeps every property a NAR records (contents, links, the owner's execute bit), so
the hash is that of the sealed tree.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from venvseal import fsutil

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals each entry the NAR walk hands it: modes as ``seal_tree``, times ``mtime``."""

    mtime: int

    @property
    def times(self) -> tuple[int, int]:
        ns = self.mtime * 1_000_000_000
        return ns, ns

    def file(self, fd: int, st: os.stat_result, name: bytes, dir_fd: int | None,
             path: bytes) -> None:
        """Seal the regular file open as ``fd`` (``st`` its fstat), after it was read."""
        mode = fsutil.SEALED_EXECUTABLE if st.st_mode & stat.S_IXUSR else fsutil.SEALED_FILE
        times = self.times
        if stat.S_IMODE(st.st_mode) == mode and st.st_mtime_ns == times[1]:
            return  # already sealed (a hard link into another store path): leave it
        if st.st_nlink > 1:
            # Never chmod a file shared with another tree (uv's cache): seal a private copy.
            fsutil.copy_over(Path(os.fsdecode(path)), Path(os.fsdecode(path)))
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=times)
            finally:
                os.close(fd)
            return
        os.fchmod(fd, mode)
        os.utime(fd, ns=times)

    def directory(self, dir_fd: int, *, top: bool) -> None:
        """Seal a directory whose entries are all sealed (so none of them touches it again);
        the ``top`` one stays writable by its owner (see the module docstring)."""
        os.fchmod(dir_fd, fsutil.SEALED_DIR | (stat.S_IWUSR if top else 0))
        os.utime(dir_fd, ns=self.times)

    def symlink(self, name: bytes, dir_fd: int | None) -> None:
        """Give a symlink the canonical time (its mode means nothing)."""
        os.utime(name, ns=self.times, dir_fd=dir_fd, follow_symlinks=False)
