"""A small client for the OCI distribution API (what registries speak), on urllib.

:class:`Registry` talks to one registry host: blob existence, monolithic and streamed blob
uploads, manifests, tags. Its requests go through :class:`~venvseal.oci.transport.Transport`
(deadlines, proxies, the docker auth flow, scrubbed errors); the credentials come from the
docker config file (:mod:`venvseal.oci.auth`); the data model is :mod:`venvseal.oci.model`.

Bounds: a manifest is read up to :data:`MAX_MANIFEST` bytes and a blob up to the size its
descriptor gives, each within the request's deadline.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from venvseal.oci.auth import (
    Credentials,
    docker_config_path,
    load_credentials,
)

# The model's names, which the client's signatures use (callers may take them from here).
from venvseal.oci.model import (
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Digest,
    Reference,
    ReferenceFormatError,
    load_json,
    parse_reference,
    sha256_digest,
)
from venvseal.oci.transport import (
    CHUNK,
    MAX_BODY,
    DigestMismatchError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnreachableError,
    Transport,
    is_local,
)

__all__ = ["OCI_INDEX", "OCI_MANIFEST", "Blob", "Credentials", "Digest",
           "DigestMismatchError", "Reference", "ReferenceFormatError", "Registry",
           "RegistryAuthError", "RegistryError", "RegistryNotFoundError",
           "RegistryUnreachableError", "docker_config_path", "is_local", "load_credentials",
           "parse_reference", "push_image", "sha256_digest"]

MAX_MANIFEST = MAX_BODY


class Manifest(NamedTuple):
    """A manifest's exact bytes, its media type and its digest."""

    data: bytes
    media_type: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class PushResult:
    """The manifest digest the registry stored, and which blobs were sent or already there."""

    digest: Digest
    uploaded: tuple[Digest, ...]
    existing: tuple[Digest, ...]


class _Progress:
    """A read-only stream that reports every chunk read (what an upload has sent)."""

    def __init__(self, stream: BinaryIO, advance: Callable[[int], None]) -> None:
        self._stream, self._advance = stream, advance

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._advance(len(data))
        return data


def upload_url(base: str, location: str, digest: Digest) -> str:
    """Where to PUT a monolithic upload: ``location`` (maybe relative) plus ``digest=``."""
    url = urllib.parse.urljoin(base, location)
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})


class Registry(Transport):
    """The distribution API of one registry host; HTTP for loopback hosts, HTTPS elsewhere.

    The requests go through :class:`~venvseal.oci.transport.Transport`, whose options it
    takes: ``timeout`` bounds each read (idle time), ``deadline`` (None: none) a whole
    request, ``env`` holds the allowlisted proxy variables (``network_env``).
    """

    @classmethod
    def for_reference(cls, ref: Reference, *, config_file: Path | None,
                      env: Mapping[str, str] | None = None) -> Registry:
        """A client for ``ref``'s host, with its credentials from ``config_file`` if any."""
        return cls(ref.host, credentials=load_credentials(config_file, ref.host), env=env,
                   credentials_source=str(config_file or "the docker config file"))

    # Blobs -------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: Digest) -> bool:
        """Whether the registry has ``digest`` in ``repo`` (HEAD; 404 means no)."""
        with self.request("HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404),
                           what=f"checking blob {digest} in {repo}") as resp:
            return resp.status == 200

    def upload_blob(self, repo: str, blob: Blob, *,
                    progress: Callable[[int], None] | None = None) -> None:
        """Upload ``blob`` in one PUT, streamed from its file (POST, then PUT ?digest=)."""
        what = f"uploading blob {blob.digest} to {repo}"
        with self.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", expect=(202,),
                           what=what) as resp:
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: the registry at {self.host} gave no upload Location")
        url = upload_url(self.url("/v2/"), location, blob.digest)
        with blob.open() as stream:
            body: BinaryIO = stream if progress is None else _Progress(stream, progress)  # type: ignore[assignment]
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Length": str(blob.size)}
            with self.request("PUT", url, body=body, rewind=stream, headers=headers,
                               expect=(201,), what=what) as resp:
                self.check_digest(resp, blob.digest, what)

    def get_blob(self, repo: str, digest: Digest, dest: BinaryIO, *, size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> int:
        """Stream blob ``digest`` into ``dest``, checking its digest; the bytes written.

        With ``size`` (the descriptor's), a blob that is longer, or says it is, is refused
        after at most ``size + 1`` bytes: an endless answer never fills the disk.
        """
        what = f"downloading blob {digest} from {repo}"
        h, got = hashlib.sha256(), 0
        with self.request("GET", f"/v2/{repo}/blobs/{digest}", what=what) as resp:
            length = resp.headers.get("Content-Length")
            if size is not None and length and length.isdigit() and int(length) > size:
                raise DigestMismatchError(f"{what}: the registry sends {length} bytes, not the "
                                          f"{size} its descriptor gives")
            while chunk := self.read(resp, CHUNK if size is None else
                                      min(CHUNK, size + 1 - got), what):
                h.update(chunk)
                dest.write(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(len(chunk))
                if size is not None and got > size:
                    raise DigestMismatchError(f"{what}: the registry sends more than the "
                                              f"{size} bytes its descriptor gives")
        if f"sha256:{h.hexdigest()}" != digest:
            raise DigestMismatchError(f"{what}: the bytes received hash to sha256:"
                                      f"{h.hexdigest()}; the registry's copy is damaged")
        return got

    # Manifests and tags ------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> Manifest:
        """``ref``'s manifest (or index) as stored, with its media type and checked digest."""
        what = f"fetching the manifest of {ref}"
        with self.request("GET", f"/v2/{self._repo(ref)}/manifests/{ref.target}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}, what=what) as resp:
            data = self.read(resp, MAX_MANIFEST + 1, what, whole=True)
            media_type = resp.headers.get_content_type()
            claimed = resp.headers.get("Docker-Content-Digest")
        if len(data) > MAX_MANIFEST:
            raise RegistryError(f"{what}: the manifest is larger than {MAX_MANIFEST} bytes")
        digest = sha256_digest(data)
        for expected in (ref.digest, claimed):
            if expected and expected != digest:
                raise DigestMismatchError(f"{what}: its bytes hash to {digest}, not {expected}")
        return Manifest(data, media_type, digest)

    def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> Digest:
        """Store ``data`` as ``ref``'s manifest; its digest (checked against the registry's)."""
        what = f"pushing the manifest of {ref}"
        digest = sha256_digest(data)
        with self.request("PUT", f"/v2/{self._repo(ref)}/manifests/{ref.target}", body=data,
                           headers={"Content-Type": media_type}, expect=(201,),
                           what=what) as resp:
            self.check_digest(resp, digest, what)
        return digest

    def tag_exists(self, ref: Reference) -> bool:
        """Whether ``ref``'s tag (or digest) names a manifest in the registry."""
        with self.request("HEAD", f"/v2/{self._repo(ref)}/manifests/{ref.target}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}, expect=(200, 404),
                           what=f"checking {ref}") as resp:
            return resp.status == 200

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, following the registry's pagination (``Link`` headers)."""
        tags: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list"
        what = f"listing the tags of {repo}"
        while path is not None:
            with self.request("GET", path, what=what) as resp:
                data = self.read(resp, MAX_MANIFEST, what, whole=True)
                link = resp.headers.get("Link", "")
            try:
                found = load_json(data or b"{}").get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: the registry at {self.host} sent no tag list"
                                    ) from None
            tags += [t for t in found if isinstance(t, str)]
            match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            path = match[1] if match else None
        return tags

    def ping(self) -> None:
        """Check that the host speaks the distribution API and accepts our credentials."""
        with self.request("GET", "/v2/", what=f"contacting the registry at {self.host}"):
            pass

    # HTTP --------------------------------------------------------------------------------

    def _repo(self, ref: Reference) -> str:
        if ref.host != self.host:
            raise ValueError(f"{ref} is not on {self.host}")
        return ref.repository


def push_image(registry: Registry, ref: Reference, manifest: bytes, media_type: str,
               blobs: Sequence[Blob], *, progress: Callable[[int], None] | None = None,
               on_blob: Callable[[Blob, bool], None] | None = None) -> PushResult:
    """Upload every blob the registry lacks, then the manifest; the stored digest.

    ``on_blob(blob, uploaded)`` is told about each blob; ``progress`` gets bytes sent.
    """
    uploaded: list[Digest] = []
    existing: list[Digest] = []
    for blob in blobs:
        present = registry.blob_exists(ref.repository, blob.digest)
        if not present:
            registry.upload_blob(ref.repository, blob, progress=progress)
        (existing if present else uploaded).append(blob.digest)
        if on_blob is not None:
            on_blob(blob, not present)
    digest = registry.put_manifest(ref, manifest, media_type)
    if digest != sha256_digest(manifest):
        raise DigestMismatchError(f"pushing {ref}: the registry stored {digest}")
    return PushResult(digest, tuple(uploaded), tuple(existing))

