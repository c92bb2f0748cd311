"""Garbage collection: roots (out-links), what they keep, and deleting the rest.

A root is a symlink registered in ``.roots/`` that points at an out-link, which points at a
store path. gc keeps every rooted path, everything it references, and (unless asked to free
them) its build inputs: what its build read and a rebuild reads again (the deps path, the
Debian toolchain root, the workspace members' wheels), transitively. It deletes the rest
that no process has locked: a running build, push or verify holds a shared lock on every
path it uses (see Store.pin), so gc never deletes a path in use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from venvseal import fsutil
from venvseal.errors import StoreError
from venvseal.store import debris
from venvseal.store.layout import GC_LOCK, ROOTS, Layout, StorePath


@dataclass(frozen=True, slots=True)
class GcResult:
    """What a collection deleted (or would delete, for a dry run)."""

    deleted: tuple[StorePath, ...]
    freed_bytes: int  # disk usage (st_blocks * 512, hard links once) of the deleted paths


def register_root(layout: Layout, link: Path, target: StorePath) -> None:
    """Make ``link`` a symlink to ``target`` (atomically) and register it as a gc root.

    The caller holds a pin on ``target``; the gc lock, held shared, keeps a collection from
    running between the out-link and its registration.
    """
    if os.path.lexists(link) and not link.is_symlink():
        raise StoreError(f"{link} exists and is not a symlink; remove it or choose "
                         "another out-link")
    fd = layout.lock(GC_LOCK, shared=True, wait=True)
    assert fd is not None  # a waiting lock is always taken
    try:
        fsutil.replace_symlink(link, str(target))
        registration = hashlib.sha256(os.fsencode(link)).hexdigest()[:32]
        fsutil.replace_symlink(layout.root / ROOTS / registration, str(link))
        layout.give(layout.root / ROOTS / registration)
    except OSError as err:
        raise StoreError(f"cannot create out-link {link} ({err.strerror}); choose a "
                         "folder you can write") from err
    finally:
        os.close(fd)


def roots(layout: Layout) -> list[tuple[Path, StorePath]]:
    """Live roots as (out-link, target), sorted; stale registrations are dropped."""
    fd = layout.lock(GC_LOCK, shared=False, wait=False)
    try:
        return _roots(layout, clean=fd is not None and layout.writable)
    finally:
        if fd is not None:
            os.close(fd)


def _roots(layout: Layout, *, clean: bool) -> list[tuple[Path, StorePath]]:
    """Live roots; with ``clean`` (gc lock held exclusively) remove stale registrations."""
    found = []
    for name in sorted(os.listdir(layout.root / ROOTS)):
        registration = layout.root / ROOTS / name
        root = None if name.startswith(".") else _link_target(layout, registration)
        if root is not None:
            found.append(root)
        elif clean:
            registration.unlink(missing_ok=True)
    return sorted(found)


def _link_target(layout: Layout, registration: Path) -> tuple[Path, StorePath] | None:
    """(out-link, store path) for a registration whose link still points into the store."""
    try:
        link = Path(os.readlink(registration))
        target = os.path.normpath(link.parent / os.readlink(link))
    except OSError:
        return None
    path = layout.as_store_path(Path(target))
    return None if path is None else (link, path)


def collect(layout: Layout, *, dry_run: bool = False,
            all_build_inputs: bool = False) -> GcResult:
    """Delete every valid path no root keeps and no process has locked; clean debris.

    Paths are taken referrers first, and a path skipped because it is in use keeps
    everything it references, so no path survives without its references. With
    ``all_build_inputs``, rooted paths keep only what they refer to (their build inputs go).
    """
    gc_fd = layout.lock(GC_LOCK, shared=False, wait=True)
    try:
        graph, builds = _graphs(layout)
        start = [target for _, target in _roots(layout, clean=not dry_run and layout.writable)]
        live = _live(start, graph, {} if all_build_inputs else builds)
        deleted: list[StorePath] = []
        freed = 0
        for path in _referrers_first(graph):
            if path in live:
                continue
            size = _collect_one(layout, path, dry_run)
            if size is None:
                live |= _closure([path], graph)
            else:
                deleted.append(path)
                freed += size
        if not dry_run:
            debris.clean_debris(layout)
            debris.clean_locks(layout)
        return GcResult(tuple(sorted(deleted)), freed)
    finally:
        if gc_fd is not None:
            os.close(gc_fd)


def _graphs(layout: Layout) -> tuple[dict[StorePath, tuple[StorePath, ...]],
                                     dict[StorePath, tuple[StorePath, ...]]]:
    """Every valid path's references and build inputs (a path gone meanwhile has none)."""
    graph: dict[StorePath, tuple[StorePath, ...]] = {}
    builds: dict[StorePath, tuple[StorePath, ...]] = {}
    for name in layout.valid_names():
        path = StorePath(layout.root / name)
        info = layout.read_meta(path)
        graph[path] = () if info is None else info.references
        builds[path] = () if info is None else info.build_inputs
    return graph, builds


def _live(start: Iterable[StorePath], graph: Mapping[StorePath, Sequence[StorePath]],
          builds: Mapping[StorePath, Sequence[StorePath]]) -> set[StorePath]:
    """What ``start`` keeps: its closure, and the closures of its paths' build inputs."""
    live = _closure(start, graph)
    pending = [b for p in live for b in builds.get(p, ())]
    while pending:
        more = _closure(pending, graph) - live
        live |= more
        pending = [b for p in more for b in builds.get(p, ())]
    return live


def _collect_one(layout: Layout, path: StorePath, dry_run: bool) -> int | None:
    """Delete ``path`` if its lock is free; its disk usage, or None if it was kept."""
    fd = layout.lock(path.name, shared=False, wait=False)
    if fd is None:
        return None
    if not layout.is_valid(path):
        os.close(fd)
        return None
    size = fsutil.disk_usage(path)
    if dry_run:
        os.close(fd)
    else:
        # Meta first: the path stops being valid at once, and a crash leaves debris.
        layout.meta_file(path.name).unlink()
        fsutil.remove_tree(path)
        layout.unlink_lock(path.name, fd)
    return size


def _closure(start: Iterable[StorePath], graph: Mapping[StorePath, Sequence[StorePath]]
             ) -> set[StorePath]:
    """``start`` and everything reachable from it through references."""
    seen: set[StorePath] = set()
    pending = list(start)
    while pending:
        path = pending.pop()
        if path not in seen:
            seen.add(path)
            pending.extend(graph.get(path, ()))
    return seen


def _referrers_first(graph: Mapping[StorePath, Sequence[StorePath]]) -> list[StorePath]:
    """Every path of ``graph``, each before the paths it references (self-references aside)."""
    order: list[StorePath] = []
    done: set[StorePath] = set()
    for start in sorted(graph):
        if start in done:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        done.add(start)
        while stack:
            path, refs = stack[-1]
            for ref in refs:
                if ref in graph and ref not in done:
                    done.add(ref)
                    stack.append((ref, iter(sorted(graph[ref]))))
                    break
            else:
                stack.pop()
                order.append(path)
    order.reverse()
    return order
