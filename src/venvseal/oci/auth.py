"""Registry credentials: the docker config file, HTTP challenges, and where credentials go.

Credentials come from the docker config file (:func:`load_credentials`), as the docker
client keeps them. They are scoped as docker scopes them: sent to the registry's own origin
(scheme, host and port, :func:`same_origin`) and to the token service its challenge names,
never to an upload ``Location`` or a redirect elsewhere. :class:`Credentials` hides its
password from ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from venvseal.errors import UsageError
from venvseal.oci.model import DOCKER_HUB

HUB_API = "registry-1.docker.io"
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", HUB_API)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password (or token) for HTTP Basic; ``repr`` hides the password."""

    username: str
    password: str = field(repr=False)

    @property
    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @property
    def secrets(self) -> tuple[str, str]:
        """What must never be shown: the password and the Basic header's value."""
        return self.password, self.basic.split(" ", 1)[1]


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` header: the scheme (lower case) and its parameters."""

    scheme: str
    params: Mapping[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        return cls(header.split(" ", 1)[0].lower(), dict(_CHALLENGE_PARAM.findall(header)))

    def token_url(self) -> str:
        """The token service's URL with the challenge's service and scope."""
        query = {k: self.params[k] for k in ("service", "scope") if self.params.get(k)}
        return self.params["realm"] + ("?" + urllib.parse.urlencode(query) if query else "")


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the port made explicit; ValueError if it has none."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r} names no host")
    return scheme, parts.hostname.lower(), port


def same_origin(url: str, base: str) -> bool:
    """True when ``url`` goes to the same scheme, host and port as ``base``."""
    try:
        return origin(url) == origin(base)
    except ValueError:
        return False


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
    except (OSError, UnicodeError, ValueError, RecursionError) as err:
        raise UsageError(f"{config_file}: not a readable docker config file "
                         f"({type(err).__name__}); fix or remove it") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    wanted = set(_HUB_KEYS) if host == DOCKER_HUB else {host}
    wanted = {_auth_key_host(w) for w in wanted}
    for key, entry in sorted((auths if isinstance(auths, dict) else {}).items()):
        if _auth_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            return _decode_auth(config_file, key, entry["auth"])
    helpers = doc.get("credHelpers", {}) if isinstance(doc, dict) else {}
    helper = ((helpers.get(host) if isinstance(helpers, dict) else None)
              or (doc.get("credsStore") if isinstance(doc, dict) else None))
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


@dataclass(frozen=True, slots=True)
class Scrubber:
    """Replaces each secret (longest first) by ``***`` in any text: a registry's password,
    Basic header and tokens, before a message built from its answers is shown."""

    secrets: tuple[str, ...] = ()

    def add(self, *more: str) -> Scrubber:
        """A scrubber for these secrets too (empty ones are ignored)."""
        found = {s for s in (*self.secrets, *more) if s}
        return Scrubber(tuple(sorted(found, key=lambda s: (-len(s), s))))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"Scrubber({len(self.secrets)} secrets)"
