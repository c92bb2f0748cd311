"""How a store path is kept in an OCI registry: one artifact per path, and its strict reader.

Each store path is one OCI artifact (image-spec v1.1 "artifact" guidance) in one repository:

- an image manifest with ``artifactType`` :data:`ARTIFACT_TYPE`, tagged :func:`tag_for` the
  path's basename, and annotated with the basename, NAR hash (SRI), NAR size and references
  (:func:`path_annotations`): everything a substituter needs, in one small request;
- a JSON config blob carrying the same, plus the inputs the store recorded;
- one layer: the path's NAR, gzip-compressed (:data:`NAR_MEDIA_TYPE`).

:func:`describe` reads such a manifest back from a registry that may be hostile: every
field is checked for type, form and range, and any problem is a ValueError (never a
RecursionError, OverflowError or KeyError), which the substituter turns into a warning.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from venvseal.errors import UsageError, VenvsealError
from venvseal.hashes import NIX32_ALPHABET, Sha256, parse_sha256
from venvseal.oci import model
from venvseal.oci.model import Blob, Digest, Reference
from venvseal.store.core import PathInfo

ARTIFACT_TYPE = "application/vnd.venvseal.store-path.v1"
CONFIG_MEDIA_TYPE = "application/vnd.venvseal.store-path.config.v1+json"
# A NAR is not a tar: its own type, so no tool unpacks it as an image layer.
NAR_MEDIA_TYPE = "application/vnd.venvseal.nar.v1+gzip"
ANNOTATION_PATH = "org.venvseal.store-path"
ANNOTATION_NAR_HASH = "org.venvseal.nar-hash"
ANNOTATION_NAR_SIZE = "org.venvseal.nar-size"
ANNOTATION_REFERENCES = "org.venvseal.references"
SCHEME = "oci://"
MAX_REFERENCES = 256  # references one path may declare (venvseal's have a handful)
_TAG_MAX = 128
_TAG_ESCAPES = {"_": "__", "+": "_p", "?": "_q", "=": "_e"}
# A store basename (store.core's rule): 32 nix32 characters, '-', a name of up to 211.
_BASENAME = re.compile(rf"[{NIX32_ALPHABET}]{{32}}-(?!\.)[A-Za-z0-9+._?=-]{{1,211}}")
_SIZE = re.compile(r"[0-9]{1,18}")  # below 10**18 bytes: no overflow anywhere after


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
            ref = model.parse_reference(rest)
        except model.ReferenceFormatError as err:
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


def manifest_for(info: PathInfo, config: Blob, layer: Blob) -> bytes:
    """The OCI image manifest of ``info``'s artifact, as canonical JSON."""
    return model.canonical_json({
        "schemaVersion": 2,
        "mediaType": model.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": model.descriptor(CONFIG_MEDIA_TYPE, config.digest, config.size),
        "layers": [{**model.descriptor(NAR_MEDIA_TYPE, layer.digest, layer.size),
                    "annotations": {"org.opencontainers.image.title": f"{info.path.name}.nar.gz"}}],
        "annotations": path_annotations(info),
    })


def config_for(info: PathInfo) -> bytes:
    """The artifact's config blob: the path's metadata and recorded inputs."""
    return model.canonical_json({"path": info.path.name, "narHash": info.nar_hash.sri,
                                 "narSize": info.nar_size,
                                 "references": sorted(ref.name for ref in info.references),
                                 "inputs": info.inputs})


@dataclass(frozen=True, slots=True)
class Described:
    """What a store path's manifest says about it, read back and checked."""

    basename: str
    nar_hash: Sha256
    nar_size: int
    references: tuple[str, ...]
    layer: Digest
    layer_size: int


def describe(data: bytes) -> Described:
    """Read a manifest written by :func:`manifest_for`; ValueError if it is not one."""
    doc = model.load_json(data)
    if not isinstance(doc, dict) or doc.get("artifactType") != ARTIFACT_TYPE:
        raise ValueError(f"not a venvseal store path artifact (artifactType {ARTIFACT_TYPE})")
    layers, notes = doc.get("layers"), doc.get("annotations")
    if not (isinstance(layers, list) and len(layers) == 1 and isinstance(layers[0], dict)
            and layers[0].get("mediaType") == NAR_MEDIA_TYPE):
        raise ValueError(f"expected exactly one {NAR_MEDIA_TYPE} layer")
    if not isinstance(notes, dict):
        raise ValueError("the manifest has no annotations")
    digest = layers[0].get("digest")
    if not (isinstance(digest, str) and model.DIGEST_RE.fullmatch(digest)):
        raise ValueError("the layer descriptor has no valid sha256 digest")
    size = model.non_negative_int(layers[0].get("size"), "the layer's size", limit=10**18 - 1)
    basename = _note(notes, ANNOTATION_PATH)
    if not _BASENAME.fullmatch(basename):
        raise ValueError(f"{ANNOTATION_PATH} {basename!r:.80} is not a store path's basename")
    nar_size = _note(notes, ANNOTATION_NAR_SIZE)
    if not _SIZE.fullmatch(nar_size):
        raise ValueError(f"{ANNOTATION_NAR_SIZE} {nar_size!r:.40} is not a size in bytes")
    return Described(basename=basename, nar_hash=_nar_hash(_note(notes, ANNOTATION_NAR_HASH)),
                     nar_size=int(nar_size), references=_references(notes),
                     layer=Digest(digest), layer_size=size)


def _note(notes: dict[str, object], key: str, default: str | None = None) -> str:
    """Annotation ``key``, which the OCI spec makes a string."""
    value = notes.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"annotation {key} is {'missing' if value is None else 'not text'}")
    return value


def _nar_hash(text: str) -> Sha256:
    try:
        return parse_sha256(text[:200], ANNOTATION_NAR_HASH)
    except VenvsealError as err:
        raise ValueError(str(err)) from None


def _references(notes: dict[str, object]) -> tuple[str, ...]:
    names = _note(notes, ANNOTATION_REFERENCES, "").split()
    if len(names) > MAX_REFERENCES:
        raise ValueError(f"{ANNOTATION_REFERENCES} names {len(names)} paths, more than the "
                         f"{MAX_REFERENCES} allowed")
    for name in names:
        if not _BASENAME.fullmatch(name):
            raise ValueError(f"{ANNOTATION_REFERENCES}: {name!r:.80} is not a store path's "
                             "basename")
    if len(set(names)) != len(names):
        raise ValueError(f"{ANNOTATION_REFERENCES} names a path twice")
    return tuple(names)
