"""What every network client shares: credentials kept out of text, proxies from a given env.

Ground floor: imports nothing of venvseal. URLs may carry credentials (``user:password@``,
``?token=...``); every text that leaves venvseal (errors, logs, ``show``, ``--json``, what
a tool printed) is shown through :func:`redact_url` or :func:`scrub`. Proxies are read only
from the environment a caller passes (the allowlisted host variables), never ``os.environ``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

SHOWN = "***"
# Query parameters whose values are credentials: access_token, api_key, X-Amz-Signature, ...
_SECRET_PARAM = re.compile(r"token|key|secret|passw|auth|sig|credential", re.IGNORECASE)
# Schemes where a lone user name is commonly a token (https://<token>@host/...); for ssh it
# is a login name such as "git" and stays visible.
_TOKEN_USER_SCHEMES = frozenset({"http", "https", "ftp", "git+https", "git+http"})
# A URL inside free text: a scheme, "://", then anything up to white space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")


def redact_url(url: str) -> str:
    """``url`` with its credentials shown as ``***``, for messages and logs.

    Redacted: the password of ``user:password@`` (a lone user name too for http, https and
    ftp, where it is often a token), and the values of query or fragment parameters whose
    name contains token, key, secret, passw, auth, sig or credential. A URL with nothing
    secret is returned unchanged, not re-spelled.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return SHOWN
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:{SHOWN}@{host}"
        elif parts.scheme.lower() in _TOKEN_USER_SCHEMES:
            netloc = f"{SHOWN}@{host}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, _redact_params(parts.query),
                        _redact_params(parts.fragment)))
    return shown if url_secrets(url) else url


def _redact_params(text: str) -> str:
    params = []
    for param in text.split("&"):
        name, eq, value = param.partition("=")
        secret = eq and value and _SECRET_PARAM.search(unquote_plus(name))
        params.append(f"{name}={SHOWN}" if secret else param)
    return "&".join(params)


def url_secrets(url: str) -> list[str]:
    """Every credential in ``url``, as written and decoded, longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    if colon:
        found.add(password)
    elif user and parts.scheme.lower() in _TOKEN_USER_SCHEMES:
        found.add(user)
    for text in (parts.query, parts.fragment):
        for param in text.split("&"):
            name, _, value = param.partition("=")
            if value and _SECRET_PARAM.search(unquote_plus(name)):
                found.add(value)
    found |= {decoded for value in found for decoded in (unquote(value), unquote_plus(value))}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrubber(*urls: str) -> Callable[[str], str]:
    """A function removing the credentials of ``urls`` from any text, however they appear.

    For text a tool printed about a URL it was given (git's output, an exception's text):
    the URL may come back re-spelled or the secret alone, so each secret is replaced too.
    """
    pairs = [(url, redact_url(url)) for url in urls]
    secrets = sorted({s for url in urls for s in url_secrets(url)}, key=len, reverse=True)

    def clean(text: str) -> str:
        for url, shown in pairs:
            text = text.replace(url, shown)
        for secret in secrets:
            text = text.replace(secret, SHOWN)
        return scrub(text)

    return clean


def scrub(text: str) -> str:
    """``text`` with every URL in it shown through :func:`redact_url`.

    For text that may quote a URL from a recipe or a lock file (an error message, a value
    shown by ``show``), where the URL is not known in advance.
    """
    return _URL_IN_TEXT.sub(lambda match: _redact_quoted(match[0]), text)


def _redact_quoted(url: str) -> str:
    """redact_url for a URL found in text; one that cannot be parsed (``oci://HOST[:PORT]``,
    a placeholder) keeps its text but never its user information."""
    try:
        urlsplit(url)
    except ValueError:
        return re.sub(r"^([^:/]+://)[^/]*@", rf"\1{SHOWN}@", url)
    return redact_url(url)


def env_value(env: Mapping[str, str], name: str) -> str:
    """``name`` (lower case, as curl prefers) or its upper-case spelling from ``env``."""
    return env.get(name) or env.get(name.upper()) or ""


def proxies(env: Mapping[str, str], host: str) -> dict[str, str]:
    """The proxy per scheme (``http``, ``https``) to reach ``host`` by, read from ``env`` only.

    ``env`` is what the caller allows from the host (``http_proxy``, ``https_proxy``,
    ``no_proxy`` in either case); ``host`` may carry a port. Empty when ``no_proxy`` names it.
    """
    if bypass_proxy(host, env_value(env, "no_proxy")):
        return {}
    return {scheme: value for scheme in ("http", "https")
            if (value := env_value(env, f"{scheme}_proxy"))}


def bypass_proxy(host: str, no_proxy: str) -> bool:
    """True if ``host`` (with an optional port) matches ``no_proxy``, as curl reads it."""
    hostname = (host.rpartition(":")[0] if host.count(":") == 1 else host).lower()
    for entry in (e.strip().lstrip(".").lower() for e in no_proxy.split(",")):
        if entry == "*" or (entry and (hostname == entry or hostname.endswith("." + entry))):
            return True
    return False


class ScrubbingFormatter(logging.Formatter):
    """A log formatter whose every line goes through :func:`scrub` (for ``-v`` logs)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
