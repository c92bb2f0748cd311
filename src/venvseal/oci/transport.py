"""HTTP to one registry: deadlines, proxies, the docker auth flow, errors, scrubbed messages.

:class:`Transport` sends the distribution API's requests for :class:`~venvseal.oci.registry.
Registry`. A request answered 401 is retried once with what its ``WWW-Authenticate``
challenge asks for, HTTP Basic or a Bearer token from the challenge's realm (distribution
spec, "token authentication"). Every request has an overall deadline (``deadline`` seconds,
:class:`venvseal.nethttp.Clock`) besides the idle ``timeout`` per read; proxies come only
from the ``env`` given.

Secrets stay here: the credentials go only to the registry's own origin (scheme, host, port)
and to the token service its challenge names, over TLS unless both are on this machine;
never to an upload ``Location`` or a redirect elsewhere. Every message built from an answer
is scrubbed of the password, the Basic header and any token.
"""

from __future__ import annotations

import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from http.client import HTTPException, HTTPResponse
from typing import BinaryIO

from venvseal import nethttp
from venvseal.errors import VenvsealError
from venvseal.oci.auth import HUB_API, Challenge, Credentials, Scrubber, same_origin
from venvseal.oci.model import DOCKER_HUB, Digest, load_json

log = logging.getLogger("venvseal.registry")

CHUNK = 1 << 20
MAX_BODY = 4 << 20  # distribution's own limit on manifest bodies; tokens and errors too


class RegistryError(VenvsealError):
    """A registry refused or failed a request; the message says which and what to do."""


class RegistryUnreachableError(RegistryError):
    """No HTTP answer from the registry at all (refused, unknown host, TLS, timeout)."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we sent."""


class RegistryNotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist in the registry."""


class DigestMismatchError(RegistryError):
    """Bytes do not hash to the digest that names them."""


class _KeepErrors(urllib.request.HTTPErrorProcessor):
    """Hand every answer but redirects back to the caller instead of raising HTTPError."""

    def http_response(self, request: urllib.request.Request,
                      response: HTTPResponse) -> HTTPResponse:
        if 300 <= response.status < 400:
            result: HTTPResponse = super().http_response(request, response)
            return result
        return response

    https_response = http_response


is_local = nethttp.is_local


class Transport:
    """Requests to one registry host: HTTP for loopback hosts, HTTPS elsewhere.

    ``timeout`` bounds each read (idle time), ``deadline`` (None: none) a whole request;
    ``env`` holds the allowlisted proxy variables (the CLI's ``network_env``).
    """

    def __init__(self, host: str, *, credentials: Credentials | None = None,
                 scheme: str | None = None, timeout: float = 60.0,
                 deadline: float | None = None, env: Mapping[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 credentials_source: str = "the docker config file") -> None:
        self.host = host
        self.credentials_source = credentials_source  # named in errors, e.g. a file's path
        self.api_host = HUB_API if host == DOCKER_HUB else host
        self.scheme = scheme or ("http" if is_local(host) else "https")
        self.timeout = timeout
        self.clock = nethttp.Clock(deadline)
        self._credentials = credentials
        self._authorization: str | None = None
        self.scrub = Scrubber().add(*(credentials.secrets if credentials else ()))
        self._opener = nethttp.build_opener(self.api_host, env or {}, self.clock,
                                            context=ssl_context, extra=[_KeepErrors()])

    # HTTP --------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.scheme}://{self.api_host}{path}"

    def read(self, resp: HTTPResponse, n: int, what: str, *, whole: bool = False) -> bytes:
        """Up to ``n`` bytes of the body (``whole``: all of them, or to its end)."""
        try:
            if not whole:
                return resp.read(n)
            chunks, left = [], n
            while left and (chunk := resp.read(min(CHUNK, left))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        except (OSError, HTTPException) as err:
            raise self._unreachable(what, err, "no complete answer from") from None

    def _unreachable(self, what: str, err: BaseException,
                     problem: str) -> RegistryUnreachableError:
        reason = self.scrub(str(getattr(err, "reason", err)) or type(err).__name__)
        return RegistryUnreachableError(
            f"{what}: {problem} the registry at {self.scheme}://{self.api_host} ({reason}); "
            "check the address, the network and that the registry is running")

    def request(self, method: str, path: str, *, what: str,
                 body: bytes | BinaryIO | None = None, rewind: BinaryIO | None = None,
                 headers: Mapping[str, str] | None = None,
                 expect: Sequence[int] = (200,)) -> HTTPResponse:
        """Send a request, answering one auth challenge; the response, its status checked."""
        url = self.url(path)
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
        if self._authorization is not None and same_origin(url, self.url("/v2/")):
            # Scoped as docker scopes it: to the registry's origin only. Unredirected: a
            # redirect (to a storage back end) must not carry our credentials either.
            req.add_unredirected_header("Authorization", self._authorization)
        log.debug("%s %s", method, self.scrub(url))
        self.clock.start()
        try:
            resp: HTTPResponse = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as err:  # a redirect we cannot follow, or 304
            return err  # type: ignore[return-value]
        except (urllib.error.URLError, OSError, HTTPException) as err:
            raise self._unreachable(what, err, "cannot reach") from None
        return resp

    def _authenticate(self, header: str, what: str) -> None:
        """Set the Authorization header a 401 challenge asks for (Basic or Bearer token)."""
        challenge = Challenge.parse(header)
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise self._no_credentials(what)
            if self._authorization == self._credentials.basic:
                raise self._refused(what)
            self._authorization = self._credentials.basic
        elif challenge.scheme == "bearer" and challenge.params.get("realm"):
            self._authorization = "Bearer " + self._token(challenge, what)
        else:
            raise RegistryAuthError(f"{what}: the registry at {self.host} asks for "
                                    "authentication venvseal does not speak "
                                    f"({challenge.scheme or 'none'})")

    def _token(self, challenge: Challenge, what: str) -> str:
        url, realm = challenge.token_url(), challenge.params["realm"]
        req = urllib.request.Request(url)
        if self._credentials is not None and self._realm_may_see_credentials(url):
            req.add_unredirected_header("Authorization", self._credentials.basic)
        log.debug("GET %s (token)", self.scrub(url))
        self.clock.start()
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                data = self.read(resp, MAX_BODY, what, whole=True)
        except (urllib.error.URLError, OSError, HTTPException) as err:
            raise RegistryUnreachableError(
                f"{what}: cannot reach the token service {self.scrub(realm)} "
                f"({self.scrub(str(getattr(err, 'reason', err)))})") from None
        if status in (401, 403):
            raise self._refused(what) if self._credentials else self._no_credentials(what)
        try:
            doc = load_json(data) if status == 200 else {}
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{what}: the token service {self.scrub(realm)} gave no "
                                    f"token (HTTP {status})")
        self.scrub = self.scrub.add(token)
        return token

    def _realm_may_see_credentials(self, url: str) -> bool:
        """The token service gets the credentials (docker's flow) over TLS, or over plain
        HTTP only when it and the registry are both on this machine."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
        return scheme == "https" or (scheme == "http" and is_local(host)
                                     and is_local(self.api_host))

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
        detail = self.scrub(_error_detail(resp))
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

    def check_digest(self, resp: HTTPResponse, digest: Digest, what: str) -> None:
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise DigestMismatchError(f"{what}: the registry stored {claimed:.80}, not {digest}")


def _error_detail(resp: HTTPResponse) -> str:
    """The distribution API's error codes and messages, or the HTTP reason (one line)."""
    try:
        errors = load_json(resp.read(1 << 16) or b"{}").get("errors") or []
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in errors]
    except (ValueError, AttributeError, TypeError, OSError, HTTPException):
        parts = []
    text = "; ".join(parts) or f"HTTP {resp.status} {resp.reason}"
    return " ".join(text.split())[:300]
