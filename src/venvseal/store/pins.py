"""Pins: shared locks a process holds on the paths it uses, until its store is closed.

As Nix's temporary roots: gc takes a path's lock exclusively before deleting it, so a pinned
path (and everything it references, pinned with it) survives a concurrent collection.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from venvseal.errors import StoreError
from venvseal.store.layout import Layout, PathInfo, StorePath

OnWait = Callable[[StorePath], None]


class Pins:
    """The pins of one open store."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._fds: dict[StorePath, int] = {}

    def __del__(self) -> None:
        # A store dropped without close() must not keep its locks for the process's life:
        # a later exclusive lock (a build, gc, repair) in this process would wait forever.
        self.release_all()

    def release_all(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def release(self, path: StorePath) -> None:
        """Drop the pin on ``path``: our shared lock would block our own exclusive one."""
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def valid(self, path: StorePath, on_wait: OnWait | None = None) -> PathInfo | None:
        """Pin ``path`` and its references; its info, or None (and no pin) if not valid."""
        if path not in self._fds:
            self._fds[path] = self.lock(path, shared=True, on_wait=on_wait)
        info = self.layout.read_meta(path) if os.path.lexists(path) else None
        if info is None:
            self.release(path)
            return None
        for ref in info.references:
            if ref not in self._fds:
                self.valid(ref, on_wait)
        return info

    def references(self, path: StorePath, references: Iterable[StorePath],
                   on_wait: OnWait | None) -> tuple[StorePath, ...]:
        """Pin each of ``references`` of ``path`` (about to be built); refuse invalid ones."""
        refs = tuple(sorted(set(references)))
        for ref in refs:
            if ref != path and self.valid(ref, on_wait) is None:
                raise StoreError(f"{path.name} refers to {ref}, which is not in the store at "
                                 f"{self.layout.root}; build {ref.name} first")
        return refs

    def lock(self, path: StorePath, *, shared: bool, on_wait: OnWait | None) -> int:
        """Lock ``path``, calling ``on_wait(path)`` first if another process holds it."""
        fd = self.layout.lock(path.name, shared=shared, wait=False)
        if fd is None:
            if on_wait is not None:
                on_wait(path)
            fd = self.layout.lock(path.name, shared=shared, wait=True)
        assert fd is not None  # a waiting lock is always taken
        return fd
