"""A small client for the OCI distribution API (what registries speak), on urllib.

:class:`Registry` talks to one registry host: blob existence, monolithic and streamed blob
uploads, manifests, tags. Authentication follows the docker client's flow: a request answered
401 is retried once with what its ``WWW-Authenticate`` challenge asks for, HTTP Basic or a
Bearer token from the challenge's realm (distribution spec, "token authentication"); the
credentials come from the docker config file (:func:`load_credentials`).

Secrets never leave this module: :class:`Credentials` hides its password from ``repr``, and
every message built from a registry's answer is scrubbed of the password, the Basic header
and any token before it reaches an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import BinaryIO, NamedTuple, NewType

from venvseal.errors import UsageError, VenvsealError

log = logging.getLogger("venvseal.registry")

Digest = NewType("Digest", str)  # "sha256:<64 hex>"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
MAX_MANIFEST = 4 << 20  # distribution's own limit on manifest bodies
CHUNK = 1 << 20
DOCKER_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", _HUB_API)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# Grammar of docker/distribution's reference package, without the domain defaults.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
                   r"|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(VenvsealError):
    """A registry refused or failed a request; the message says which and what to do."""


class ReferenceFormatError(UsageError):
    """An image reference is not ``HOST[:PORT]/REPO[:TAG]`` (or ``@sha256:...``)."""


class RegistryUnreachableError(RegistryError):
    """No HTTP answer from the registry at all (refused, unknown host, TLS, timeout)."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we sent."""


class RegistryNotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist in the registry."""


class DigestMismatchError(RegistryError):
    """Bytes do not hash to the digest that names them."""


def sha256_digest(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


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
    if digest and not _DIGEST.fullmatch(digest):
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


# Credentials -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password (or token) for HTTP Basic; ``repr`` hides the password."""

    username: str
    password: str = field(repr=False)

    @property
    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def docker_config_path(env: Mapping[str, str], home: Path) -> Path:
    """Where docker keeps its config: ``$DOCKER_CONFIG/config.json`` or ``~/.docker``."""
    folder = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    return folder / "config.json"


def _auth_key_host(key: str) -> str:
    """The host[:port] an ``auths`` key names (keys may carry a scheme and a path)."""
    return key.split("://", 1)[-1].split("/", 1)[0]


def load_credentials(config_file: Path | None, host: str) -> Credentials | None:
    """The credentials for ``host`` in a docker config file (``auths[host].auth``), if any.

    A missing file means none. Credential helpers (``credsStore``, ``credHelpers``) are not
    run: an entry only they hold is reported with what to do instead.
    """
    if config_file is None or not config_file.is_file():
        return None
    try:
        doc = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError) as err:
        raise UsageError(f"{config_file}: not a readable docker config file ({err}); fix or "
                         "remove it") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    wanted = set(_HUB_KEYS) if host == DOCKER_HUB else {host}
    wanted = {_auth_key_host(w) for w in wanted}
    for key, entry in sorted((auths or {}).items()):
        if _auth_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            return _decode_auth(config_file, key, entry["auth"])
    helpers = doc.get("credHelpers", {}) if isinstance(doc, dict) else {}
    helper = (helpers.get(host) if isinstance(helpers, dict) else None) or doc.get("credsStore")
    if helper:
        raise UsageError(f"{config_file}: the credentials for {host} are kept by the credential "
                         f"helper docker-credential-{helper}, which venvseal does not run; add "
                         f'"auths": {{"{host}": {{"auth": "<base64 of user:password>"}}}} to a '
                         "docker config file and point DOCKER_CONFIG at its folder")
    return None


def _decode_auth(config_file: Path, key: str, value: str) -> Credentials:
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeError):
        sep = ""
    if not sep:  # never echo the value: it is the secret
        raise UsageError(f"{config_file}: auths[{key!r}].auth is not base64 of 'user:password'; "
                         "log in again (docker login) or rewrite it")
    return Credentials(user, password)


# The client ------------------------------------------------------------------------------


class Manifest(NamedTuple):
    """A manifest's exact bytes, its media type and its digest."""

    data: bytes
    media_type: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob to push: its digest and size, and how to open its bytes (a binary stream)."""

    digest: Digest
    size: int
    open: Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True, slots=True)
class PushResult:
    """The manifest digest the registry stored, and which blobs were sent or already there."""

    digest: Digest
    uploaded: tuple[Digest, ...]
    existing: tuple[Digest, ...]


class _KeepErrors(urllib.request.HTTPErrorProcessor):
    """Hand every answer but redirects back to the caller instead of raising HTTPError."""

    def http_response(self, request: urllib.request.Request,
                      response: HTTPResponse) -> HTTPResponse:
        if 300 <= response.status < 400:
            result: HTTPResponse = super().http_response(request, response)
            return result
        return response

    https_response = http_response


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


def is_local(host: str) -> bool:
    """True for the loopback hosts, which are spoken to over plain HTTP without proxies."""
    return host.rsplit(":", 1)[0] in _LOCAL_HOSTS or host in _LOCAL_HOSTS


class Registry:
    """The distribution API of one registry host; HTTP for loopback hosts, HTTPS elsewhere."""

    def __init__(self, host: str, *, credentials: Credentials | None = None,
                 scheme: str | None = None, timeout: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None,
                 credentials_source: str = "the docker config file") -> None:
        self.host = host
        self.credentials_source = credentials_source  # named in errors, e.g. a file's path
        self.api_host = _HUB_API if host == DOCKER_HUB else host
        self.scheme = scheme or ("http" if is_local(host) else "https")
        self.timeout = timeout
        self._credentials = credentials
        self._authorization: str | None = None
        self._secrets = [] if credentials is None else [
            credentials.password, credentials.basic.split(" ", 1)[1]]
        handlers: list[urllib.request.BaseHandler] = [
            _KeepErrors(), urllib.request.HTTPSHandler(context=ssl_context)]
        if is_local(host):  # a proxy from the environment must not swallow loopback traffic
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def for_reference(cls, ref: Reference, *, config_file: Path | None) -> Registry:
        """A client for ``ref``'s host, with its credentials from ``config_file`` if any."""
        return cls(ref.host, credentials=load_credentials(config_file, ref.host),
                   credentials_source=str(config_file or "the docker config file"))

    # Blobs -------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: Digest) -> bool:
        """Whether the registry has ``digest`` in ``repo`` (HEAD; 404 means no)."""
        with self._request("HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404),
                           what=f"checking blob {digest} in {repo}") as resp:
            return resp.status == 200

    def upload_blob(self, repo: str, blob: Blob, *,
                    progress: Callable[[int], None] | None = None) -> None:
        """Upload ``blob`` in one PUT, streamed from its file (POST, then PUT ?digest=)."""
        what = f"uploading blob {blob.digest} to {repo}"
        with self._request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", expect=(202,),
                           what=what) as resp:
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: the registry at {self.host} gave no upload Location")
        url = upload_url(self._url("/v2/"), location, blob.digest)
        with blob.open() as stream:
            body: BinaryIO = stream if progress is None else _Progress(stream, progress)  # type: ignore[assignment]
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Length": str(blob.size)}
            with self._request("PUT", url, body=body, rewind=stream, headers=headers,
                               expect=(201,), what=what) as resp:
                self._check_digest(resp, blob.digest, what)

    def get_blob(self, repo: str, digest: Digest, dest: BinaryIO, *,
                 progress: Callable[[int], None] | None = None) -> int:
        """Stream blob ``digest`` into ``dest``, checking its digest; the bytes written."""
        what = f"downloading blob {digest} from {repo}"
        h, size = hashlib.sha256(), 0
        with self._request("GET", f"/v2/{repo}/blobs/{digest}", what=what) as resp:
            while chunk := resp.read(CHUNK):
                h.update(chunk)
                dest.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        if f"sha256:{h.hexdigest()}" != digest:
            raise DigestMismatchError(f"{what}: the bytes received hash to sha256:"
                                      f"{h.hexdigest()}; the registry's copy is damaged")
        return size

    # Manifests and tags ------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> Manifest:
        """``ref``'s manifest (or index) as stored, with its media type and checked digest."""
        what = f"fetching the manifest of {ref}"
        with self._request("GET", f"/v2/{self._repo(ref)}/manifests/{ref.target}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}, what=what) as resp:
            data = resp.read(MAX_MANIFEST + 1)
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
        with self._request("PUT", f"/v2/{self._repo(ref)}/manifests/{ref.target}", body=data,
                           headers={"Content-Type": media_type}, expect=(201,),
                           what=what) as resp:
            self._check_digest(resp, digest, what)
        return digest

    def tag_exists(self, ref: Reference) -> bool:
        """Whether ``ref``'s tag (or digest) names a manifest in the registry."""
        with self._request("HEAD", f"/v2/{self._repo(ref)}/manifests/{ref.target}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}, expect=(200, 404),
                           what=f"checking {ref}") as resp:
            return resp.status == 200

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, following the registry's pagination (``Link`` headers)."""
        tags: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list"
        while path is not None:
            with self._request("GET", path, what=f"listing the tags of {repo}") as resp:
                doc = json.loads(resp.read(MAX_MANIFEST) or b"{}")
                link = resp.headers.get("Link", "")
            tags += doc.get("tags") or []
            match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            path = match[1] if match else None
        return tags

    def ping(self) -> None:
        """Check that the host speaks the distribution API and accepts our credentials."""
        with self._request("GET", "/v2/", what=f"contacting the registry at {self.host}"):
            pass

    # HTTP --------------------------------------------------------------------------------

    def _repo(self, ref: Reference) -> str:
        if ref.host != self.host:
            raise ValueError(f"{ref} is not on {self.host}")
        return ref.repository

    def _url(self, path: str) -> str:
        return path if "://" in path else f"{self.scheme}://{self.api_host}{path}"

    def _request(self, method: str, path: str, *, what: str,
                 body: bytes | BinaryIO | None = None, rewind: BinaryIO | None = None,
                 headers: Mapping[str, str] | None = None,
                 expect: Sequence[int] = (200,)) -> HTTPResponse:
        """Send a request, answering one auth challenge; the response, its status checked."""
        url = self._url(path)
        start = rewind.tell() if rewind is not None else 0
        resp = self._send(method, url, body, headers, what)
        if resp.status == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self._authenticate(challenge, what)
            if rewind is not None:
                rewind.seek(start)
            resp = self._send(method, url, body, headers, what)
        if resp.status not in expect:
            try:
                self._fail(resp, what)
            finally:
                resp.close()
        return resp

    def _send(self, method: str, url: str, body: bytes | BinaryIO | None,
              headers: Mapping[str, str] | None, what: str) -> HTTPResponse:
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if self._authorization is not None:
            # Unredirected: a redirect (to a storage back end) must not carry our credentials.
            req.add_unredirected_header("Authorization", self._authorization)
        log.debug("%s %s", method, url)
        try:
            resp: HTTPResponse = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as err:  # a redirect we cannot follow, or 304
            return err  # type: ignore[return-value]
        except (urllib.error.URLError, OSError, HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise RegistryUnreachableError(
                f"{what}: cannot reach the registry at {self.scheme}://{self.api_host} "
                f"({self._scrub(str(reason))}); check the address and that the registry is "
                "running") from None
        return resp

    def _authenticate(self, challenge: str, what: str) -> None:
        """Set the Authorization header a 401 challenge asks for (Basic or Bearer token)."""
        scheme = challenge.split(" ", 1)[0].lower()
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if scheme == "basic":
            if self._credentials is None:
                raise self._no_credentials(what)
            if self._authorization == self._credentials.basic:
                raise self._refused(what)
            self._authorization = self._credentials.basic
        elif scheme == "bearer" and params.get("realm"):
            self._authorization = "Bearer " + self._token(params, what)
        else:
            raise RegistryAuthError(f"{what}: the registry at {self.host} asks for "
                                    f"authentication venvseal does not speak ({scheme or 'none'})")

    def _token(self, params: Mapping[str, str], what: str) -> str:
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        url = params["realm"] + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url)
        if self._credentials is not None:
            req.add_unredirected_header("Authorization", self._credentials.basic)
        log.debug("GET %s (token)", url)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, data = resp.status, resp.read(MAX_MANIFEST)
        except (urllib.error.URLError, OSError, HTTPException) as err:
            raise RegistryUnreachableError(
                f"{what}: cannot reach the token service {params['realm']} "
                f"({self._scrub(str(getattr(err, 'reason', err)))})") from None
        if status in (401, 403):
            raise self._refused(what) if self._credentials else self._no_credentials(what)
        try:
            doc = json.loads(data) if status == 200 else {}
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{what}: the token service {params['realm']} gave no "
                                    f"token (HTTP {status})")
        self._secrets.append(token)
        return token

    def _no_credentials(self, what: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"{what}: the registry at {self.host} requires authentication (HTTP 401) and no "
            f"credentials for {self.host} were found in {self.credentials_source}; add "
            "credentials with docker login or to the docker config file "
            "($DOCKER_CONFIG/config.json or ~/.docker/config.json)")

    def _refused(self, what: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"{what}: the registry at {self.host} refused the credentials for {self.host} "
            f"from {self.credentials_source} (HTTP 401); check the user name and password "
            "there, or log in again with docker login")

    def _fail(self, resp: HTTPResponse, what: str) -> None:
        detail = self._scrub(_error_detail(resp))
        status = resp.status
        if status == 404:
            raise RegistryNotFoundError(f"{what}: not found at {self.host} ({detail}); check "
                                        "the repository and tag")
        if status == 401:
            raise self._refused(what) if self._credentials else self._no_credentials(what)
        if status == 403:
            raise RegistryAuthError(f"{what}: the registry at {self.host} denied access "
                                    f"(HTTP 403: {detail}); check your permissions there")
        if "DIGEST_INVALID" in detail:
            raise DigestMismatchError(f"{what}: the registry computed another digest for the "
                                      f"bytes sent ({detail}); the source is damaged")
        raise RegistryError(f"{what}: the registry at {self.host} answered HTTP {status} "
                            f"({detail})")

    def _check_digest(self, resp: HTTPResponse, digest: Digest, what: str) -> None:
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise DigestMismatchError(f"{what}: the registry stored {claimed}, not {digest}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def _error_detail(resp: HTTPResponse) -> str:
    """The distribution API's error codes and messages, or the HTTP reason."""
    try:
        doc = json.loads(resp.read(1 << 16) or b"{}")
        errors = doc.get("errors") or []
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in errors]
    except (ValueError, AttributeError, OSError, HTTPException):
        parts = []
    return "; ".join(parts) or f"HTTP {resp.status} {resp.reason}"


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
