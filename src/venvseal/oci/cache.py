"""An OCI registry as a shared build cache: store paths pushed as artifacts, fetched back.

A store path is valid in every store (it lives at ``/venvseal/store/<basename>`` at run time
wherever the store is), so what one machine built another can fetch by name. This module
pushes paths (:func:`push_paths`, in the format of :mod:`venvseal.oci.artifact`) and makes
the substituters that fetch them back (:func:`substituters`,
:class:`~venvseal.oci.substituter.OciSubstituter`).

Trust: the NAR hash is checked against the declared hash for fixed outputs, otherwise
against the manifest's own annotation, which catches damage but not a malicious writer.
Whoever may push to the repository decides what input-addressed paths contain, as with an
unsigned Nix binary cache: use a repository only trusted builders can write. What a hostile
cache can do beyond that is bounded (docs/security.md, "Hostile cache").
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from venvseal.errors import StoreCorruptError, StoreError, VenvsealError
from venvseal.hashes import Sha256
from venvseal.oci import registry
from venvseal.oci.artifact import OciTarget, config_for, describe, manifest_for, tag_for
from venvseal.oci.model import Blob, Digest, Reference, sha256_digest
from venvseal.oci.registry import Registry
from venvseal.oci.substituter import DEFAULT_TIMEOUT, OciSubstituter
from venvseal.store.core import PathInfo, Store, StorePath
from venvseal.store.nar import dump_nar

__all__ = ["OciSubstituter", "OciTarget", "PushedPath", "closure_order", "push_paths",
           "substituters"]

# gzip level 6 (gzip's and docker's default): on the demo's 33 MB closure NAR, 6.4 MB in
# 0.95 s; level 1 gives 8.2 MB in 0.24 s, level 9 6.3 MB in 2.3 s. Paid once per push.
GZIP_LEVEL = 6
_GZIP_WBITS = 31  # zlib's gzip container; it writes mtime 0, so the blob is deterministic


@dataclass(frozen=True, slots=True)
class PushedPath:
    """One store path's push: its tag, and whether it was sent or already there."""

    path: StorePath
    tag: str
    uploaded: bool
    bytes_sent: int


def closure_order(store: Store, paths: Iterable[StorePath]) -> list[StorePath]:
    """``paths`` and every path they reference, each after its references, no repeats."""
    order: list[StorePath] = []
    done: set[StorePath] = set()
    for start in sorted(set(paths)):
        stack = [(start, False)]
        while stack:
            path, expanded = stack.pop()
            if path in done:
                continue
            if expanded:
                done.add(path)
                order.append(path)
                continue
            info = store.pin(path)  # kept from a concurrent gc until the store is closed
            if info is None:
                raise StoreError(f"{path} is not a valid path in the store at {store.root}; "
                                 "build it before pushing it")
            stack.append((path, True))
            stack.extend((ref, False) for ref in sorted(info.references, reverse=True)
                         if ref != path and ref not in done)
    return order


def push_paths(store: Store, paths: Iterable[StorePath], target: OciTarget, *,
               client: Registry,
               on_step: Callable[[str], None] = lambda _msg: None) -> list[PushedPath]:
    """Upload each of ``paths``, and what they reference, as an artifact in ``target``.

    References go first, so a path in the cache always finds its references there. A path
    whose tag already names an artifact with the same NAR hash is skipped without reading
    it; blobs the registry has are not sent again. Each path is re-hashed while it is
    compressed and refused (StoreCorruptError) if it no longer matches its recorded hash.
    """
    pushed = []
    for path in closure_order(store, paths):
        info = store.query(path)
        assert info is not None  # closure_order checked every path
        ref = target.reference(tag_for(path.name))
        if _already_pushed(client, ref, info):
            pushed.append(PushedPath(path, ref.target, uploaded=False, bytes_sent=0))
            continue
        on_step(f"pushing {path.name} to {target}")
        with store.scratch() as work:
            layer = _compress_nar(info, work / "nar.gz")
            config = _config_blob(info)
            result = registry.push_image(client, ref, manifest_for(info, config, layer),
                                         registry.OCI_MANIFEST, [config, layer])
        sent = sum(b.size for b in (config, layer) if b.digest in result.uploaded)
        pushed.append(PushedPath(path, ref.target, uploaded=True, bytes_sent=sent))
    return pushed


def _already_pushed(client: Registry, ref: Reference, info: PathInfo) -> bool:
    try:
        found = describe(client.get_manifest(ref).data)
    except registry.RegistryNotFoundError:
        return False
    except (ValueError, VenvsealError):
        return False  # damaged or foreign: overwrite it with a good one
    return (found.basename == info.path.name and found.nar_hash == info.nar_hash
            and client.blob_exists(ref.repository, found.layer))


def _config_blob(info: PathInfo) -> Blob:
    data = config_for(info)
    return Blob(sha256_digest(data), len(data), lambda: io.BytesIO(data))


def _compress_nar(info: PathInfo, dest: Path) -> Blob:
    """Write ``info``'s path as a gzip'd NAR to ``dest``, checking its NAR hash on the way."""
    nar_sha, blob_sha = hashlib.sha256(), hashlib.sha256()
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    size = nar_size = 0
    with dest.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal size
            if data:
                blob_sha.update(data)
                out.write(data)
                size += len(data)

        def write(chunk: bytes | memoryview) -> None:
            nonlocal nar_size
            nar_sha.update(chunk)
            nar_size += len(chunk)
            emit(compressor.compress(chunk))

        dump_nar(info.path, write)
        emit(compressor.flush())
    got = Sha256(nar_sha.digest())
    if got != info.nar_hash or nar_size != info.nar_size:
        raise StoreCorruptError(str(info.path), info.nar_hash.sri, got.sri)
    return Blob(Digest("sha256:" + blob_sha.hexdigest()), size, lambda: dest.open("rb"))


def substituters(urls: Sequence[str], *, config_file: Path | None,
                 notify: Callable[[str], None] = lambda _msg: None,
                 timeout: float = DEFAULT_TIMEOUT,
                 env: Mapping[str, str] | None = None) -> list[OciSubstituter]:
    """One substituter per ``oci://`` URL, with credentials from the docker config file.

    ``timeout`` is the deadline of each request to the cache (``--cache-timeout``); ``env``
    holds the allowlisted proxy variables.
    """
    found = []
    for url in urls:
        target = OciTarget.parse(url)
        client = Registry(target.registry, deadline=timeout, timeout=min(60.0, timeout),
                          credentials=registry.load_credentials(config_file, target.registry),
                          env=env)
        found.append(OciSubstituter(target, client, notify=notify))
    return found
