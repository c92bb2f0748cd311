"""An OCI registry as a shared build cache: store paths pushed as artifacts, fetched back.

Each store path is one OCI artifact (image-spec v1.1 "artifact" guidance) in one repository:

- an image manifest with ``artifactType`` :data:`ARTIFACT_TYPE`, tagged :func:`tag_for` the
  path's basename, and annotated with the basename, NAR hash (SRI), NAR size and references
  (:func:`path_annotations`): everything a substituter needs, in one small request;
- a JSON config blob carrying the same, plus the inputs the store recorded;
- one layer: the path's NAR, gzip-compressed (:data:`NAR_MEDIA_TYPE`).

A store path is valid in every store (it lives at ``/venvseal/store/<basename>`` at run time
wherever the store is), so what one machine built another can fetch by name.
:class:`OciSubstituter` does that for :class:`~venvseal.store.Store`: it looks the tag up,
downloads the layer to the store's scratch space (its sha256 checked against its digest),
restores the NAR while hashing it (:mod:`venvseal.narread`) and adds the tree through
``Store.add``, so it is sealed, checked against the expected hash and published atomically.
Any failure is a warning and a fallback to building: a cache never breaks a build.

Trust: the NAR hash is checked against the declared hash for fixed outputs, otherwise
against the manifest's own annotation, which catches damage but not a malicious writer.
Whoever may push to the repository decides what input-addressed paths contain, as with an
unsigned Nix binary cache: use a repository only trusted builders can write.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvseal.errors import StoreCorruptError, StoreError, UsageError, VenvsealError
from venvseal.hashes import Sha256, parse_sha256
from venvseal.oci import registry
from venvseal.oci.registry import Blob, Digest, Reference, Registry
from venvseal.store.core import PathInfo, Store, StorePath, TreeSink, name_of
from venvseal.store.nar import dump_nar
from venvseal.store.narread import restore_nar

log = logging.getLogger("venvseal.cache")

ARTIFACT_TYPE = "application/vnd.venvseal.store-path.v1"
CONFIG_MEDIA_TYPE = "application/vnd.venvseal.store-path.config.v1+json"
# A NAR is not a tar: its own type, so no tool unpacks it as an image layer.
NAR_MEDIA_TYPE = "application/vnd.venvseal.nar.v1+gzip"
ANNOTATION_PATH = "org.venvseal.store-path"
ANNOTATION_NAR_HASH = "org.venvseal.nar-hash"
ANNOTATION_NAR_SIZE = "org.venvseal.nar-size"
ANNOTATION_REFERENCES = "org.venvseal.references"
SCHEME = "oci://"
# gzip level 6 (gzip's and docker's default): on the demo's 33 MB closure NAR, 6.4 MB in
# 0.95 s; level 1 gives 8.2 MB in 0.24 s, level 9 6.3 MB in 2.3 s. Paid once per push.
GZIP_LEVEL = 6
_GZIP_WBITS = 31  # zlib's gzip container; it writes mtime 0, so the blob is deterministic
_TAG_MAX = 128
_TAG_ESCAPES = {"_": "__", "+": "_p", "?": "_q", "=": "_e"}


class CacheError(VenvsealError):
    """A cache operation failed; the message names the path or registry and what to do."""


@dataclass(frozen=True, slots=True)
class OciTarget:
    """One repository of one registry: ``oci://HOST[:PORT]/REPO``."""

    registry: str
    repo: str

    @classmethod
    def parse(cls, url: str) -> OciTarget:
        """Read ``oci://HOST[:PORT]/REPO``; UsageError naming the problem otherwise."""
        if not url.startswith(SCHEME):
            raise UsageError(f"{url!r} is not a cache URL; write oci://HOST[:PORT]/REPO, "
                             "e.g. oci://127.0.0.1:5000/venvseal-cache")
        rest = url.removeprefix(SCHEME).rstrip("/")
        host = rest.split("/", 1)[0]
        hint = ("write oci://HOST[:PORT]/REPO with no tag or digest (HOST needs a '.' or a "
                "port unless it is localhost; REPO is lower-case)")
        try:
            ref = registry.parse_reference(rest)
        except registry.ReferenceFormatError as err:
            raise UsageError(f"{url!r} is not a cache URL: {err}; {hint}") from None
        if ref.host != host or ref.tag or ref.digest:
            raise UsageError(f"{url!r} is not a cache URL; {hint}")
        return cls(ref.host, ref.repository)

    def reference(self, tag: str) -> Reference:
        return Reference(self.registry, self.repo, tag)

    def __str__(self) -> str:
        return f"{SCHEME}{self.registry}/{self.repo}"


def tag_for(basename: str) -> str:
    """The tag naming ``basename``'s artifact: deterministic, valid, distinct per basename.

    Store names may hold ``+?=`` which tags may not: ``_`` escapes them (``_p _q _e``, and
    ``__`` for ``_`` itself), so the mapping is one-to-one. A result past the 128 characters
    a tag may have keeps its first 95 (the 32-character path hash and the name's start) and
    ends with 32 hex digits of the sha256 of the whole basename.
    """
    tag = re.sub(r"[_+?=]", lambda m: _TAG_ESCAPES[m[0]], basename)
    if len(tag) > _TAG_MAX:
        tag = f"{tag[:95]}-{hashlib.sha256(basename.encode()).hexdigest()[:32]}"
    return tag


def path_annotations(info: PathInfo) -> dict[str, str]:
    """The manifest annotations describing ``info``'s path (OCI annotation values are text)."""
    return {
        ANNOTATION_PATH: info.path.name,
        ANNOTATION_NAR_HASH: info.nar_hash.sri,
        ANNOTATION_NAR_SIZE: str(info.nar_size),
        ANNOTATION_REFERENCES: " ".join(sorted(ref.name for ref in info.references)),
    }


@dataclass(frozen=True, slots=True)
class Described:
    """What a store path's manifest says about it, read back and checked."""

    basename: str
    nar_hash: Sha256
    nar_size: int
    references: tuple[str, ...]
    layer: Digest
    layer_size: int


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, digest: Digest, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest_for(info: PathInfo, config: Blob, layer: Blob) -> bytes:
    """The OCI image manifest of ``info``'s artifact, as canonical JSON."""
    return _canonical({
        "schemaVersion": 2,
        "mediaType": registry.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config.digest, config.size),
        "layers": [{**_descriptor(NAR_MEDIA_TYPE, layer.digest, layer.size),
                    "annotations": {"org.opencontainers.image.title": f"{info.path.name}.nar.gz"}}],
        "annotations": path_annotations(info),
    })


def describe(data: bytes) -> Described:
    """Read a manifest written by :func:`manifest_for`; ValueError if it is not one."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("artifactType") != ARTIFACT_TYPE:
        raise ValueError(f"not a venvseal store path artifact (artifactType {ARTIFACT_TYPE})")
    layers, notes = doc.get("layers"), doc.get("annotations")
    if not (isinstance(layers, list) and len(layers) == 1 and isinstance(layers[0], dict)
            and layers[0].get("mediaType") == NAR_MEDIA_TYPE):
        raise ValueError(f"expected exactly one {NAR_MEDIA_TYPE} layer")
    if not isinstance(notes, dict):
        raise ValueError("the manifest has no annotations")
    digest, size = layers[0].get("digest"), layers[0].get("size")
    if not (isinstance(digest, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
            and isinstance(size, int) and size >= 0):
        raise ValueError("the layer descriptor has no valid sha256 digest and size")
    return Described(
        basename=str(notes[ANNOTATION_PATH]),
        nar_hash=parse_sha256(str(notes[ANNOTATION_NAR_HASH]), ANNOTATION_NAR_HASH),
        nar_size=int(notes[ANNOTATION_NAR_SIZE]),
        references=tuple(str(notes.get(ANNOTATION_REFERENCES, "")).split()),
        layer=Digest(digest), layer_size=size)


# Pushing ---------------------------------------------------------------------------------


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
    except (ValueError, KeyError, VenvsealError):
        return False  # damaged or foreign: overwrite it with a good one
    return (found.basename == info.path.name and found.nar_hash == info.nar_hash
            and client.blob_exists(ref.repository, found.layer))


def _config_blob(info: PathInfo) -> Blob:
    data = _canonical({"path": info.path.name, "narHash": info.nar_hash.sri,
                       "narSize": info.nar_size,
                       "references": sorted(ref.name for ref in info.references),
                       "inputs": info.inputs})
    return Blob(registry.sha256_digest(data), len(data), lambda: io.BytesIO(data))


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


# Fetching --------------------------------------------------------------------------------


class OciSubstituter:
    """Fetches store paths pushed by :func:`push_paths` from ``target`` (a store substituter).

    ``notify`` hears one line per path fetched (the CLI shows it). A registry that cannot be
    reached at all is warned about once and not asked again by this substituter.
    """

    def __init__(self, target: OciTarget, client: Registry, *,
                 notify: Callable[[str], None] = lambda _msg: None) -> None:
        self.target = target
        self.client = client
        self.notify = notify
        self._offline = False
        self._fetching: set[StorePath] = set()  # a hostile cache could make references loop

    def __repr__(self) -> str:
        return f"OciSubstituter({self.target})"

    def fetch(self, sink: TreeSink, path: StorePath, expected: Sha256 | None
              ) -> PathInfo | None:
        """Add ``path`` through ``sink`` from the registry; None (store unchanged) if the
        registry lacks it or what it holds is damaged, which is logged as a warning."""
        if self._offline or path in self._fetching:
            return None
        ref = self.target.reference(tag_for(path.name))
        try:
            manifest = self.client.get_manifest(ref)
        except registry.RegistryNotFoundError:
            log.debug("%s: %s is not in the cache", self.target, path.name)
            return None
        except registry.RegistryUnreachableError as err:
            self._offline = True
            log.warning("warning: substituter %s is unreachable, building instead (and not "
                        "asking it again in this run): %s", self.target, err)
            return None
        except VenvsealError as err:
            log.warning("warning: cannot look up %s in %s, building it instead: %s",
                        path.name, self.target, err)
            return None
        self._fetching.add(path)
        try:
            return self._restore(sink, path, expected, manifest)
        except (VenvsealError, OSError, EOFError, zlib.error, ValueError, KeyError,
                TypeError) as err:
            # OSError covers gzip.BadGzipFile; EOFError a truncated gzip stream; the
            # others a manifest whose annotations are not what push_paths writes.
            log.warning("warning: the cached copy of %s in %s is unusable, building it "
                        "instead: %s", path.name, self.target, err)
            return None
        finally:
            self._fetching.discard(path)

    def _restore(self, sink: TreeSink, path: StorePath, expected: Sha256 | None,
                 manifest: registry.Manifest) -> PathInfo | None:
        found = describe(manifest.data)
        if found.basename != path.name:
            raise CacheError(f"tag {tag_for(path.name)} holds {found.basename}, not {path.name}")
        declared = expected if expected is not None else found.nar_hash
        if found.nar_hash != declared:
            raise CacheError(f"it is annotated {found.nar_hash.sri}, not the declared "
                             f"{declared.sri}")
        references = self._references(sink, path, found.references)
        if references is None:
            return None
        self.notify(f"fetching {path.name} from {self.target} "
                    f"({found.layer_size / 1e6:.1f} MB compressed)")
        with sink.scratch() as work:
            blob = work / "nar.gz"
            with blob.open("wb") as out:
                self.client.get_blob(self.target.repo, found.layer, out)  # checks the digest
            tree = work / "tree"
            with gzip.open(blob, "rb") as nar:
                result = restore_nar(nar.read, tree)
            if result.hash != declared or result.size != found.nar_size:
                raise CacheError(f"its NAR hashes to {result.hash.sri} ({result.size} bytes), "
                                 f"not {declared.sri} ({found.nar_size} bytes)")
            inputs = {"substituted": str(self.target), "manifest": manifest.digest}
            return sink.add_tree(path, tree, nar=result, references=references,
                                 inputs=inputs)

    def _references(self, sink: TreeSink, path: StorePath,
                    names: Sequence[str]) -> list[StorePath] | None:
        """The references as store paths, each made valid first (from any substituter)."""
        refs = []
        for name in names:
            ref = path if name == path.name else sink.reference(name)
            if ref is None:
                log.warning("warning: %s refers to %s, which neither the store nor a "
                            "substituter has; building %s instead", path.name, name,
                            name_of(path))
                return None
            refs.append(ref)
        return refs


def substituters(urls: Sequence[str], *, config_file: Path | None,
                 notify: Callable[[str], None] = lambda _msg: None) -> list[OciSubstituter]:
    """One substituter per ``oci://`` URL, with credentials from the docker config file."""
    found = []
    for url in urls:
        target = OciTarget.parse(url)
        credentials = registry.load_credentials(config_file, target.registry)
        found.append(OciSubstituter(target, Registry(target.registry, credentials=credentials),
                                    notify=notify))
    return found
