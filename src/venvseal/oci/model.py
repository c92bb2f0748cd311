"""The OCI data model, with no network: digests, media types, references, blobs, JSON.

What the offline image writer, the cache's artifact format and the registry client share.
JSON from elsewhere (a registry, an archive) is read with :func:`load_json`, which refuses
deep nesting before parsing (the json module recurses once per level) and non-standard
numbers (``Infinity``, ``NaN``), so hostile bytes fail as a ValueError, never as a
RecursionError or OverflowError further on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, NewType

from venvseal.errors import UsageError

Digest = NewType("Digest", str)  # "sha256:<64 hex>"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
DOCKER_HUB = "docker.io"
JSON_DEPTH_MAX = 32  # OCI manifests and configs nest 4-5 levels

# Grammar of docker/distribution's reference package, without the domain defaults.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
                   r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")
# JSON's structural tokens outside strings: a string is skipped whole, escapes included.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


class ReferenceFormatError(UsageError):
    """An image reference is not ``HOST[:PORT]/REPO[:TAG]`` (or ``@sha256:...``)."""


def sha256_digest(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def canonical_json(doc: object) -> bytes:
    """``doc`` as canonical JSON: sorted keys, no spaces (deterministic bytes to hash)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type: str, digest: Digest, size: int) -> dict[str, Any]:
    """An OCI content descriptor."""
    return {"mediaType": media_type, "digest": digest, "size": size}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"{text:.40} is out of range")
    return value


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in the JSON text ``data`` (without parsing it)."""
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(data):
        token = match[0]
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def load_json(data: bytes, *, depth: int = JSON_DEPTH_MAX) -> Any:
    """Parse JSON from elsewhere; ValueError for bad JSON, nesting past ``depth``, or
    ``Infinity``/``NaN``."""
    if (found := json_depth(data)) > depth:
        raise ValueError(f"JSON nested {found} levels deep, more than the {depth} allowed")
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # unreachable after the depth check; kept as a guard
        raise ValueError("JSON nested too deep") from None


def non_negative_int(value: object, what: str, *, limit: int = 1 << 62) -> int:
    """``value`` if it is an int (not a bool) in [0, limit]; ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{what} must be a whole number from 0 to {limit}, not {value!r:.40}")
    return value


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob to push: its digest and size, and how to open its bytes (a binary stream)."""

    digest: Digest
    size: int
    open: Callable[[], AbstractContextManager[BinaryIO]]


# References ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """``host/repository[:tag][@digest]``; ``host`` is "" for a bare ``name:tag``."""

    host: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """host/repository, as docker prints it."""
        return f"{self.host}/{self.repository}" if self.host else self.repository

    @property
    def target(self) -> str:
        """What a manifest request names: the digest, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.host, self.repository, _check_tag(tag, tag), None)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.name}{tag}" + (f"@{self.digest}" if self.digest else "")


def _check_tag(tag: str, text: str) -> str:
    if not _TAG.fullmatch(tag):
        raise ReferenceFormatError(
            f"{text!r}: tag {tag!r} must be 1-128 letters, digits, '_', '.' or '-', not "
            "starting with '.' or '-'")
    return tag


def parse_reference(text: str, *, require_host: bool = True) -> Reference:
    """``HOST[:PORT]/REPO[:TAG][@sha256:HEX]`` (or ``REPO[:TAG]`` without ``require_host``).

    The first component is the host when it has a '.' or ':' or is ``localhost``, as in
    docker's grammar. ``docker.io/x`` means ``docker.io/library/x``.
    """
    example = "e.g. 127.0.0.1:5000/demo:1.0 or registry.example.org/team/app:2"
    rest, _, digest = text.partition("@")
    if digest and not DIGEST_RE.fullmatch(digest):
        raise ReferenceFormatError(f"{text!r}: digest must be sha256: and 64 lower-case hex")
    first, slash, remainder = rest.partition("/")
    is_host = bool(slash) and ("." in first or ":" in first or first == "localhost")
    host, path = (first, remainder) if is_host else ("", rest)
    if not host and require_host:
        raise ReferenceFormatError(f"{text!r} names no registry host; write HOST[:PORT]/REPO"
                                   f"[:TAG], {example}")
    if host and not _HOST.fullmatch(host):
        raise ReferenceFormatError(f"{text!r}: {host!r} is not a host[:port]; {example}")
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
        _check_tag(tag, text)
    if not _REPOSITORY.fullmatch(path):
        raise ReferenceFormatError(
            f"{text!r}: repository {path!r} must be lower-case letters and digits, separated "
            f"by '/', '.', '_' or '-'; {example}")
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return Reference(host, path, tag, Digest(digest) if digest else None)
