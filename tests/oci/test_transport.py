"""The registry client against the tests' own scripted server: deadlines, bounds, credentials.

Fast: no build, no docker-registry. A manifest or blob sent one byte at a time is abandoned
at the request's deadline (not only an idle timeout per read); a blob longer than its
descriptor, or endless, stops after at most one byte more; docker-config credentials go to
the registry's own origin only, never to an upload ``Location`` or a redirect on another
port, and never into a message. Proxies come from the allowlisted environment only.
"""

from __future__ import annotations

import io
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostile_registry import Answer, HostileRegistry, endless, hostile_registry
from support.image import require_tool

from venvseal import nethttp
from venvseal.oci.auth import Credentials, Scrubber, same_origin
from venvseal.oci.model import Blob, parse_reference, sha256_digest
from venvseal.oci.registry import (
    DigestMismatchError,
    Registry,
    RegistryAuthError,
    RegistryNotFoundError,
    RegistryUnreachableError,
)

USER, PASSWORD = "alice", "correct-horse-" + "x9" * 8
CREDENTIALS = Credentials(USER, PASSWORD)
DATA = b"some blob bytes"
DIGEST = sha256_digest(DATA)


@pytest.fixture
def servers() -> Iterator[tuple[HostileRegistry, HostileRegistry]]:
    with hostile_registry() as server, hostile_registry() as other:
        yield server, other


@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_a_slow_drip_is_abandoned_at_the_deadline(servers: tuple[HostileRegistry, ...],
                                                  what: str) -> None:
    server, _ = servers
    server.answer = lambda *_: Answer(200, b"{" + b" " * 100 + b"}", drip=0.2)
    client = Registry(server.host, deadline=1.0, timeout=30.0)  # each byte comes in time
    start = time.monotonic()
    with pytest.raises(RegistryUnreachableError, match="no complete answer within 1 s"):
        if what == "manifest":
            client.get_manifest(parse_reference(f"{server.host}/r:t"))
        else:
            client.get_blob("r", DIGEST, io.BytesIO())
    assert time.monotonic() - start < 3


def test_a_slow_status_line_is_abandoned_at_the_deadline() -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def drip() -> None:
        conn, _ = listener.accept()
        try:
            for byte in b"HTTP/1.1 200 OK\r\n":
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            conn.close()

    threading.Thread(target=drip, daemon=True).start()
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(RegistryUnreachableError, match="within 1 s"):
        Registry(host, deadline=1.0).get_manifest(parse_reference(f"{host}/r:t"))
    assert time.monotonic() - start < 3
    listener.close()


@pytest.mark.parametrize("answer", [
    Answer(200, DATA + b"x" * (1 << 20)),  # says so in Content-Length
    Answer(200, DATA + b"x" * (1 << 20), length=False),  # does not
    Answer(200, endless(), length=False),
])
def test_a_blob_longer_than_its_descriptor_stops_early(
        servers: tuple[HostileRegistry, ...], answer: Answer) -> None:
    server, _ = servers
    server.answer = lambda *_: answer
    sink = io.BytesIO()
    with pytest.raises(DigestMismatchError, match=f"{len(DATA)} bytes its descriptor gives"
                       "|its descriptor gives"):
        Registry(server.host).get_blob("r", DIGEST, sink, size=len(DATA))
    assert len(sink.getvalue()) <= len(DATA) + 1


def test_a_blob_of_its_descriptors_size_is_read(servers: tuple[HostileRegistry, ...]) -> None:
    server, _ = servers
    server.answer = lambda *_: Answer(200, DATA)
    sink = io.BytesIO()
    assert Registry(server.host).get_blob("r", DIGEST, sink, size=len(DATA)) == len(DATA)
    assert sink.getvalue() == DATA


def basic_then(server: HostileRegistry, answer: Answer) -> None:
    """The server asks for Basic credentials, then gives ``answer``."""
    def script(_method: str, _path: str, headers: dict[str, str]) -> Answer:
        if "Authorization" not in headers:
            return Answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="r"'})
        return answer

    server.answer = script


def test_credentials_never_go_to_an_upload_location_on_another_port(
        servers: tuple[HostileRegistry, ...]) -> None:
    server, other = servers
    basic_then(server, Answer(202, b"", {"Location": f"http://{other.host}/upload/1"}))
    other.answer = lambda *_: Answer(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "'
                                          + PASSWORD.encode() + b'"}]}',
                                     {"WWW-Authenticate": 'Basic realm="other"'})
    blob = Blob(DIGEST, len(DATA), lambda: io.BytesIO(DATA))
    with pytest.raises((RegistryAuthError, RegistryNotFoundError)) as err:
        Registry(server.host, credentials=CREDENTIALS).upload_blob("r", blob)
    assert [s.method for s in server.seen] == ["POST", "POST"]
    assert "Authorization" in server.seen[1].headers  # the registry's own origin: yes
    assert all("Authorization" not in s.headers for s in other.seen), other.seen
    assert other.seen and other.seen[0].method == "PUT"
    assert PASSWORD not in str(err.value)


def test_credentials_never_follow_a_redirect(servers: tuple[HostileRegistry, ...]) -> None:
    server, other = servers
    basic_then(server, Answer(307, b"", {"Location": f"http://{other.host}/storage/blob"}))
    other.answer = lambda *_: Answer(200, DATA)
    sink = io.BytesIO()
    Registry(server.host, credentials=CREDENTIALS).get_blob("r", DIGEST, sink)
    assert sink.getvalue() == DATA
    assert other.seen and all("Authorization" not in s.headers for s in other.seen)


def test_a_token_realm_over_plain_http_elsewhere_gets_no_credentials(
        servers: tuple[HostileRegistry, ...]) -> None:
    server, other = servers
    # A loopback registry may name a loopback token service; a remote realm over plain
    # HTTP never sees the credentials (here: the registry is local, the realm is not).
    client = Registry(server.host, credentials=CREDENTIALS)
    assert client._realm_may_see_credentials(f"http://{other.host}/token")
    assert not client._realm_may_see_credentials("http://tokens.example.org/token")
    assert client._realm_may_see_credentials("https://auth.example.org/token")


@pytest.mark.parametrize(("url", "base", "same"), [
    ("http://127.0.0.1:5000/v2/x", "http://127.0.0.1:5000/v2/", True),
    ("http://127.0.0.1:5001/v2/x", "http://127.0.0.1:5000/v2/", False),
    ("https://r.example.org/v2/", "https://r.example.org:443/v2/", True),
    ("http://r.example.org/v2/", "https://r.example.org/v2/", False),
    ("https://storage.example.org/x", "https://r.example.org/v2/", False),
    ("https://R.Example.org/x", "https://r.example.org/v2/", True),
    ("not a url", "https://r.example.org/v2/", False),
])
def test_same_origin(url: str, base: str, same: bool) -> None:
    assert same_origin(url, base) is same


@pytest.mark.parametrize(("host", "env", "proxies"), [
    ("r.example.org", {"https_proxy": "http://p:3128"}, {"https": "http://p:3128"}),
    ("r.example.org", {"HTTPS_PROXY": "http://p:3128", "HTTP_PROXY": "http://q:1"},
     {"https": "http://p:3128", "http": "http://q:1"}),
    ("r.example.org", {"https_proxy": "http://p:3128", "no_proxy": ".example.org"}, {}),
    ("r.example.org:5000", {"https_proxy": "http://p:3128", "NO_PROXY": "r.example.org"}, {}),
    ("127.0.0.1:5000", {"http_proxy": "http://p:3128"}, {}),
    ("[::1]:5000", {"http_proxy": "http://p:3128"}, {}),
    ("r.example.org", {}, {}),
])
def test_proxies_come_from_the_given_environment_only(
        host: str, env: dict[str, str], proxies: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://from-os-environ:1")
    assert nethttp.proxies_for(host, env) == proxies


def test_a_scrubber_hides_every_secret_longest_first() -> None:
    scrub = Scrubber().add("abc", "abcdef", "")
    assert scrub("x abcdef abc y") == "x *** *** y"
    assert "abc" not in repr(scrub)


def test_the_registry_errors_name_no_secret(servers: tuple[HostileRegistry, ...]) -> None:
    server, _ = servers
    basic_then(server, Answer(500, b'{"errors": [{"code": "X", "message": "'
                                   + PASSWORD.encode() + b'"}]}'))
    with pytest.raises(Exception) as err:
        Registry(server.host, credentials=CREDENTIALS).get_manifest(
            parse_reference(f"{server.host}/r:t"))
    assert "HTTP 500" in str(err.value) and PASSWORD not in str(err.value)
    assert "***" in str(err.value)




def test_https_requests_keep_the_deadline_too(tmp_path: Path) -> None:
    openssl = require_tool("openssl", "openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with hostile_registry() as server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
        client = Registry(server.host, scheme="https", deadline=1.0,
                          ssl_context=ssl.create_default_context(cafile=str(cert)))
        server.answer = lambda *_: Answer(200, DATA)
        sink = io.BytesIO()
        assert client.get_blob("r", DIGEST, sink, size=len(DATA)) == len(DATA)
        assert sink.getvalue() == DATA
        server.answer = lambda *_: Answer(200, DATA, drip=0.2)
        start = time.monotonic()
        with pytest.raises(RegistryUnreachableError, match="within 1 s"):
            client.get_blob("r", DIGEST, io.BytesIO(), size=len(DATA))
        assert time.monotonic() - start < 3
