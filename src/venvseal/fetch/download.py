"""Downloading a URL over HTTP(S) (or ``file:``) with only the allowlisted proxies and CA.

Credentials in the URL (``user:password@``) become HTTP basic authentication that is never
sent on to a redirect's host. Proxies and the CA bundle come from the ``network_env`` the
caller passes (:func:`venvseal.netutil.proxies`), never from ``os.environ``. Exceptions are
not chained: their text may hold the raw URL; their scrubbed text is in the message instead.
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from venvseal.fetch.errors import FetchError
from venvseal.netutil import proxies, redact_url, scrubber

log = logging.getLogger("venvseal.fetch")

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds a download may stall (per socket operation) before it is abandoned


def download(url: str, dest: Path, *, where: str, network_env: Mapping[str, str]) -> None:
    """Stream ``url`` to ``dest``; FetchError if it fails or arrives incomplete."""
    shown, scrub = redact_url(url), scrubber(url)
    log.debug("downloading %s", shown)
    try:
        request = _request(url)
        response = _opener(request.host, network_env).open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        err.close()
        raise FetchError(where, f"{shown} answered HTTP {err.code} {scrub(str(err.reason))}",
                         "check the URL and its credentials") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise FetchError(where, f"cannot download {shown}: {scrub(str(reason))}",
                         "check the URL and the network (proxy settings)") from None
    with response, dest.open("wb") as file:
        length = response.headers.get("Content-Length")
        received = 0
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as err:  # reset, timeout, bad chunk
                detail = scrub(str(err)) or type(err).__name__
                raise _interrupted(where, shown, f"after {received} bytes: {detail}") from None
            if not chunk:
                break
            file.write(chunk)
            received += len(chunk)
    # http.client returns a short body without complaint when the server hangs up early.
    if length is not None and length.isdigit() and received != int(length):
        raise _interrupted(where, shown, f"after {received} of {length} bytes")


def _interrupted(where: str, shown: str, detail: str) -> FetchError:
    return FetchError(where, f"the download of {shown} was interrupted {detail}",
                      "retry; if it keeps failing, check the network")


def _request(url: str) -> urllib.request.Request:
    """A request for ``url`` with ``user:password@`` turned into HTTP basic authentication."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)))
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    # Unredirected: a redirect to another host must not carry the credentials along.
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _opener(host: str, network_env: Mapping[str, str]) -> urllib.request.OpenerDirector:
    """An opener using only ``network_env``'s proxies and CA bundle, never os.environ."""
    context = ssl.create_default_context(cafile=network_env.get("SSL_CERT_FILE"))
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies(network_env, host)),
                                       urllib.request.HTTPSHandler(context=context))
