"""Crash debris: what a killed build leaves in the store, and its removal.

A crash leaves at worst a path's entry without its meta (or the reverse), temp files under
``.tmp``, a scratch folder, a lock file of a path never built, or a published folder whose
top is still writable. Whoever next opens the store (or runs gc) and takes the path's lock
without waiting removes (or seals) it.
"""

from __future__ import annotations

import fcntl
import os

from venvseal import fsutil
from venvseal.store.layout import (
    BASENAME_RE,
    LOCKS,
    META,
    SCRATCH,
    TMP,
    Layout,
    seal_top,
    top_unsealed,
)


def clean_debris(layout: Layout) -> None:
    """Remove leftovers of crashed builds, for each path whose lock is free now.

    What another user made (root building in this user's store and killed) and we may
    not remove is left for them: a later run of theirs cleans it.
    """
    entries = {name for name in os.listdir(layout.root) if not name.startswith(".")}
    metas = {name.removesuffix(".json") for name in os.listdir(layout.root / META)}
    temps = {name.split("~", 1)[0] for name in os.listdir(layout.root / TMP)}
    clean_scratch(layout)
    unsealed = {name for name in entries & metas if top_unsealed(layout.root / name)}
    for basename in sorted((entries ^ metas) | temps | unsealed):
        if not BASENAME_RE.fullmatch(basename):
            continue  # not a store path's: leave what we did not make alone
        fd = layout.lock(basename, shared=False, wait=False)
        if fd is not None:
            try:
                remove_debris(layout, basename)
            except PermissionError:
                pass  # another user's (see above)
            finally:
                os.close(fd)


def clean_scratch(layout: Layout) -> None:
    """Remove scratch folders no live process holds."""
    for name in os.listdir(layout.root / TMP):
        if name.split("~", 1)[0] != SCRATCH:
            continue
        work = layout.root / TMP / name
        try:
            fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fsutil.remove_tree(work)
        except (BlockingIOError, PermissionError):
            continue
        finally:
            os.close(fd)


def clean_locks(layout: Layout) -> None:
    """Delete the lock files of paths that do not exist (failed builds) if they are free."""
    for name in os.listdir(layout.root / LOCKS):
        basename = name.removesuffix(".lock")
        if (not BASENAME_RE.fullmatch(basename) or os.path.lexists(layout.root / basename)
                or layout.meta_file(basename).exists()):
            continue
        fd = layout.lock(basename, shared=False, wait=False)
        if fd is not None:
            layout.unlink_lock(basename, fd)


def remove_debris(layout: Layout, basename: str) -> None:
    """With ``basename``'s lock held: drop its temp files and a half of an invalid path,
    and seal the top folder a crash left writable (see venvseal.store.publish)."""
    for name in os.listdir(layout.root / TMP):
        if name.split("~", 1)[0] == basename:
            fsutil.remove_tree(layout.root / TMP / name)
    entry, meta = layout.root / basename, layout.meta_file(basename)
    if os.path.lexists(entry) != meta.exists():
        meta.unlink(missing_ok=True)
        fsutil.remove_tree(entry)
    elif meta.exists() and top_unsealed(entry):
        seal_top(entry)
