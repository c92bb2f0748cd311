"""Fetching store paths from an OCI cache (a store substituter), against a hostile registry.

:class:`OciSubstituter` looks a path's tag up, reads the manifests of the path and of every
reference the store lacks (iteratively, at most :data:`MAX_PATHS`, a loop refused), then for
each, references first: downloads the layer to the store's scratch space (at most its
descriptor's size, its sha256 checked), restores the NAR while hashing it (at most the
annotated NAR size; symlinks only inside the path or into its declared references,
:mod:`venvseal.store.linkcheck`) and adds the tree through ``Store.add``, so it is sealed,
checked against the expected hash and published atomically.

Every request has an overall deadline (the client's, ``--cache-timeout``). Any failure, of
whatever kind, is one ``warning:`` line naming the path, and the caller builds it: a cache
never breaks a build and never leaves a partial path.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from venvseal.errors import VenvsealError
from venvseal.hashes import Sha256
from venvseal.oci import registry
from venvseal.oci.artifact import Described, OciTarget, describe, tag_for
from venvseal.oci.registry import Registry
from venvseal.store.core import PathInfo, StorePath, TreeSink, name_of
from venvseal.store.linkcheck import LinkRule
from venvseal.store.narread import restore_nar

log = logging.getLogger("venvseal.cache")

DEFAULT_TIMEOUT = 300.0  # seconds one request to a cache may take, whatever it sends
MAX_PATHS = 64  # paths one fetch may bring in (a closure and its references: a handful)
# toolchain.debian.store_name: a root file system, whose absolute links are meant inside it.
_ROOT_NAME = re.compile(r"debian-[A-Za-z0-9.+_-]+-root")


class CacheError(VenvsealError):
    """A cache operation failed; the message names the path or registry and what to do."""


@dataclass(frozen=True, slots=True)
class _Planned:
    """One path to fetch: what its manifest says, and the hash it must have."""

    path: StorePath
    found: Described
    manifest: registry.Digest
    expected: Sha256


class Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...


class _Bounded:
    """``stream``'s bytes, refused (CacheError) once more than ``limit`` have come."""

    def __init__(self, stream: Reader, limit: int, what: str) -> None:
        self._stream, self._limit, self._what, self._total = stream, limit, what, 0

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        self._total += len(data)
        if self._total > self._limit:
            raise CacheError(f"{self._what} is longer than the {self._limit} bytes annotated")
        return data


def one_line(err: BaseException) -> str:
    """An exception's message on one line (or its type's name, if it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


class OciSubstituter:
    """Fetches store paths pushed by :func:`~venvseal.oci.cache.push_paths` from ``target``.

    ``notify`` hears one line per path fetched (the CLI shows it). A registry that cannot be
    reached, or does not answer in time, is warned about once and not asked again by this
    substituter. While it fetches, it declines to be asked again (a reference it lacks is
    asked of the other substituters), so fetches never nest through it.
    """

    def __init__(self, target: OciTarget, client: Registry, *,
                 notify: Callable[[str], None] = lambda _msg: None) -> None:
        self.target = target
        self.client = client
        self.notify = notify
        self._offline = False
        self._busy = False
        self._planned: dict[StorePath, _Planned] = {}

    def __repr__(self) -> str:
        return f"OciSubstituter({self.target})"

    def fetch(self, sink: TreeSink, path: StorePath, expected: Sha256 | None
              ) -> PathInfo | None:
        """Add ``path`` through ``sink`` from the registry; None (store unchanged) if the
        registry lacks it or what it holds is unusable, which is logged as a warning."""
        if self._offline:
            return None
        if self._busy:  # asked back by the store for a reference this fetch planned
            planned = self._planned.get(path)
            return None if planned is None else self._restore(sink, planned)
        self._busy = True
        try:
            return self._fetch(sink, path, expected)
        except registry.RegistryUnreachableError as err:
            self._offline = True
            log.warning("warning: cannot fetch %s: substituter %s is unreachable or too slow, "
                        "building instead (and not asking it again in this run): %s",
                        path.name, self.target, one_line(err))
        except Exception as err:  # a cache never breaks a build, whatever fails in it
            log.debug("fetching %s from %s failed", path.name, self.target, exc_info=True)
            log.warning("warning: the cached copy of %s in %s is unusable, building it "
                        "instead: %s", path.name, self.target, one_line(err))
        finally:
            self._busy = False
            self._planned = {}
        return None

    def _fetch(self, sink: TreeSink, path: StorePath, expected: Sha256 | None
               ) -> PathInfo | None:
        first = self._look_up(path, expected)
        if first is None:
            log.debug("%s: %s is not in the cache", self.target, path.name)
            return None
        *references, last = self._plan(sink, first)
        self._planned = {p.path: p for p in references}
        for planned in references:  # through the store, which records what was substituted
            if sink.reference(planned.path.name) is None:
                raise CacheError(f"{planned.path.name}, which {path.name} refers to, could "
                                 "not be fetched")
        return self._restore(sink, last)

    def _look_up(self, path: StorePath, expected: Sha256 | None) -> _Planned | None:
        """``path``'s manifest, read and checked; None if the cache lacks it."""
        try:
            manifest = self.client.get_manifest(self.target.reference(tag_for(path.name)))
        except registry.RegistryNotFoundError:
            return None
        found = describe(manifest.data)
        if found.basename != path.name:
            raise CacheError(f"tag {tag_for(path.name)} holds {found.basename}, not {path.name}")
        declared = expected if expected is not None else found.nar_hash
        if found.nar_hash != declared:
            raise CacheError(f"{path.name} is annotated {found.nar_hash.sri}, not the declared "
                             f"{declared.sri}")
        return _Planned(path, found, manifest.digest, declared)

    def _plan(self, sink: TreeSink, first: _Planned) -> list[_Planned]:
        """``first`` and the references the store (or another substituter) cannot give
        that this cache has, references first. Iterative; a reference none has, a loop, or
        too many paths: CacheError."""
        planned = {first.path: first}
        todo = [first]
        while todo:
            item = todo.pop()
            for name in item.found.references:
                ref = StorePath(item.path.parent / name)
                if ref == item.path or ref in planned:
                    continue
                if sink.reference(name) is not None:  # in the store, or from another cache
                    continue
                if len(planned) >= MAX_PATHS:
                    raise CacheError(f"{first.path.name} and its references make more than "
                                     f"{MAX_PATHS} paths to fetch")
                found = self._look_up(ref, None)
                if found is None:
                    raise CacheError(f"{item.path.name} refers to {name}, which neither "
                                     f"the store nor a substituter has; building "
                                     f"{name_of(first.path)} instead")
                planned[ref] = found
                todo.append(found)
        return _references_first(planned)

    def _restore(self, sink: TreeSink, planned: _Planned) -> PathInfo:
        path, found = planned.path, planned.found
        references = [StorePath(path.parent / n) for n in found.references]
        # A Debian root (toolchain.debian.realise) refers to nothing; a closure never is one.
        root = bool(_ROOT_NAME.fullmatch(name_of(path))) and not found.references
        rule = LinkRule(path.name, frozenset(found.references), root=root)
        self.notify(f"fetching {path.name} from {self.target} "
                    f"({found.layer_size / 1e6:.1f} MB compressed)")
        with sink.scratch() as work:
            blob = work / "nar.gz"
            with blob.open("wb") as out:  # at most the descriptor's size; digest checked
                self.client.get_blob(self.target.repo, found.layer, out, size=found.layer_size)
            tree = work / "tree"
            with gzip.open(blob, "rb") as nar:
                bounded = _Bounded(nar, found.nar_size, f"the NAR of {path.name}")
                result = restore_nar(bounded.read, tree, links=rule)
            if result.hash != planned.expected or result.size != found.nar_size:
                raise CacheError(f"its NAR hashes to {result.hash.sri} ({result.size} bytes), "
                                 f"not {planned.expected.sri} ({found.nar_size} bytes)")
            inputs = {"substituted": str(self.target), "manifest": planned.manifest}
            return sink.add_tree(path, tree, nar=result, references=references,
                                 inputs=inputs)


def _references_first(planned: dict[StorePath, _Planned]) -> list[_Planned]:
    """The planned paths, each after the planned paths it references (Kahn's algorithm)."""
    waits = {path: {r for r in (path.parent / n for n in item.found.references)
                    if r != path and r in planned}
             for path, item in planned.items()}
    order: list[_Planned] = []
    ready = sorted(p for p, refs in waits.items() if not refs)
    while ready:
        done = ready.pop()
        order.append(planned[done])
        for path, refs in waits.items():
            if done in refs:
                refs.discard(done)
                if not refs:
                    ready.append(path)
    if len(order) < len(planned):
        loop = sorted(p.name for p, refs in waits.items() if refs)
        raise CacheError(f"the references of {', '.join(loop)} form a loop")
    return order
