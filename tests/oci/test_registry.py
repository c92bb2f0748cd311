"""The registry client and ``venvseal push`` against real registries (Debian's docker-registry).

Three registries are started in temporary folders on 127.0.0.1: one open, one with htpasswd
(Basic) authentication, one with token (Bearer) authentication whose token service is a few
lines here signing JWTs with openssl. Small images come from test_image's made-up closure;
the bundled example's image (slow) is also copied by skopeo and pushed from its recipe.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import io
import json
import secrets
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import Run, free_port, venvseal
from support.image import DemoImage, demo_image, fake_build, require_tool
from support.registry import Server, http, registry_server

from venvseal.errors import UsageError
from venvseal.oci.image import build_image
from venvseal.oci.registry import (
    OCI_MANIFEST,
    Credentials,
    Digest,
    Reference,
    ReferenceFormatError,
    Registry,
    RegistryNotFoundError,
    RegistryUnreachableError,
    load_credentials,
    parse_reference,
    upload_url,
)

USER, PASSWORD = "alice", "s3cret-Pa55-" + secrets.token_hex(4)

# References and credentials ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:5000/demo:1", Reference("127.0.0.1:5000", "demo", "1")),
    ("localhost/team/app", Reference("localhost", "team/app")),
    ("registry.example.org/a.b/c-d_e:v1.2-rc", Reference("registry.example.org", "a.b/c-d_e",
                                                          "v1.2-rc")),
    ("docker.io/demo", Reference("docker.io", "library/demo")),
    ("[::1]:5000/demo@sha256:" + "a" * 64,
     Reference("[::1]:5000", "demo", None, Digest("sha256:" + "a" * 64))),
])
def test_references_parse(text: str, expected: Reference) -> None:
    ref = parse_reference(text)
    assert ref == expected
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(("text", "message"), [
    ("demo:1", "names no registry host"),
    ("127.0.0.1:5000/Demo:1", "must be lower-case"),
    ("127.0.0.1:5000/demo:-x", "tag '-x' must be"),
    ("127.0.0.1:5000/demo@sha256:abc", "digest must be sha256:"),
    ("127.0.0.1:5000/", "repository '' must be"),
    ("host_name:5000/demo", "is not a host[:port]"),
])
def test_bad_references_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(ReferenceFormatError) as err:
        parse_reference(text)
    assert message in str(err.value)
    run = venvseal("push", "--archive", "app.tar", text)
    assert run.code == 2
    assert message in run.error


@pytest.mark.parametrize(("location", "url"), [
    ("/v2/demo/blobs/uploads/u1?_state=a%3D", "http://h:5/v2/demo/blobs/uploads/u1?_state=a%3D&"),
    ("uploads/u2", "http://h:5/v2/uploads/u2?"),
    ("https://storage.example.org/up/u3", "https://storage.example.org/up/u3?"),
])
def test_upload_location_may_be_relative(location: str, url: str) -> None:
    digest = Digest("sha256:" + "b" * 64)
    assert upload_url("http://h:5/v2/", location, digest) == url + "digest=sha256%3A" + "b" * 64


def auth_entry(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def docker_config(folder: Path, auths: dict[str, object], **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"auths": auths, **extra}))
    return folder / "config.json"


@pytest.mark.parametrize(("key", "host"), [
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ("https://registry.example.org/v1/", "registry.example.org"),
    ("https://index.docker.io/v1/", "docker.io"),
])
def test_credentials_are_found_by_host(tmp_path: Path, key: str, host: str) -> None:
    config = docker_config(tmp_path, {key: {"auth": auth_entry(USER, PASSWORD)},
                                      "other.example.org": {"auth": auth_entry("bob", "x")}})
    assert load_credentials(config, host) == Credentials(USER, PASSWORD)
    assert load_credentials(config, "unknown.example.org") is None
    assert load_credentials(tmp_path / "absent.json", host) is None
    assert PASSWORD not in repr(Credentials(USER, PASSWORD))


@pytest.mark.parametrize(("doc", "message"), [
    ('{"auths": {"h:1": {"auth": "not base64!"}}}', "is not base64 of 'user:password'"),
    ('{"auths": {"h:1": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
     "is not base64 of 'user:password'"),
    ('{"auths": {}, "credsStore": "pass"}', "credential helper docker-credential-pass"),
    ("{not json", "not a readable docker config file"),
])
def test_unusable_credentials_say_what_to_do(tmp_path: Path, doc: str, message: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(doc)
    with pytest.raises(UsageError) as err:
        load_credentials(config, "h:1")
    assert message in str(err.value)
    assert "nocolon" not in str(err.value)


# Real registries ---------------------------------------------------------------------------


def bcrypt_hash(password: str) -> str:
    """bcrypt, the only hash docker-registry's htpasswd accepts, from libxcrypt.

    libcrypt1 is an essential Debian package, so this needs neither apache2-utils'
    htpasswd nor the bcrypt wheel; Python's own crypt module is deprecated (PEP 594).
    """
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = lib.crypt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = (ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
                                  ctypes.c_int)
    lib.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    hashed: bytes = lib.crypt(password.encode(), salt)
    assert hashed.startswith(b"$2b$05$"), hashed
    return hashed.decode()








@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with registry_server(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The made-up closure's image archive, and its manifest digest."""
    base = tmp_path_factory.mktemp("small-image")
    rec, result, runtime = fake_build(base / "tree")
    info = build_image(rec, result, runtime, base / "small.tar")
    return base / "small.tar", info.manifest_digest


def test_push_archive_then_read_everything_back(registry: Server, small_image: tuple[Path, str],
                                                tmp_path: Path) -> None:
    archive, digest = small_image
    first = venvseal("--json", "push", "--archive", archive, f"{registry.host}/small")
    assert first.code == 0, first.err
    data = first.json()
    assert data["digest"] == digest
    assert data["ref"] == f"{registry.host}/small:1.0_local"  # the archive's own tag
    assert len(data["uploaded"]) == 4 and data["existing"] == []
    assert registry.digest("small", "1.0_local") == digest
    again = venvseal("--json", "push", "--archive", archive, f"{registry.host}/small:two")
    assert again.code == 0, again.err
    assert again.json()["uploaded"] == [] and sorted(again.json()["existing"]) == sorted(
        data["uploaded"])
    # What the build cache will use: manifests, blobs, tags.
    client = Registry(registry.host)
    ref = parse_reference(f"{registry.host}/small:two")
    manifest = client.get_manifest(ref)
    assert (manifest.digest, manifest.media_type) == (digest, OCI_MANIFEST)
    assert hashlib.sha256(manifest.data).hexdigest() == digest.removeprefix("sha256:")
    for desc in [json.loads(manifest.data)["config"], *json.loads(manifest.data)["layers"]]:
        with (tmp_path / "blob").open("w+b") as f:
            assert client.get_blob("small", desc["digest"], f) == desc["size"]
            f.seek(0)
            assert hashlib.sha256(f.read()).hexdigest() == desc["digest"][7:]
    assert client.tag_exists(ref)
    assert not client.tag_exists(ref.with_tag("three"))
    assert sorted(client.list_tags("small")) == ["1.0_local", "two"]
    by_digest = parse_reference(f"{registry.host}/small@{digest}")
    assert client.get_manifest(by_digest).data == manifest.data


def test_unknown_repository_and_tag_are_clear_404s(registry: Server) -> None:
    client = Registry(registry.host)
    with pytest.raises(RegistryNotFoundError) as err:
        client.get_manifest(parse_reference(f"{registry.host}/nothing-here:1"))
    assert f"fetching the manifest of {registry.host}/nothing-here:1: not found" in str(err.value)
    assert "unknown" in str(err.value)
    with pytest.raises(RegistryNotFoundError):
        client.list_tags("nothing-here")


def test_unreachable_registry_is_named(tmp_path: Path, small_image: tuple[Path, str]) -> None:
    port = free_port()  # nothing listens there
    run = venvseal("push", "--archive", small_image[0], f"127.0.0.1:{port}/demo:1")
    assert run.code == 1
    assert f"cannot reach the registry at http://127.0.0.1:{port}" in run.error
    assert "connection refused" in run.error.lower()
    with pytest.raises(RegistryUnreachableError):
        Registry(f"127.0.0.1:{port}").ping()


def test_a_damaged_archive_is_refused_by_digest(registry: Server,
                                                small_image: tuple[Path, str],
                                                tmp_path: Path) -> None:
    data = bytearray(small_image[0].read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        manifest = json.loads(tar.extractfile(  # type: ignore[union-attr]
            "blobs/sha256/" + small_image[1][7:]).read())
        layer = tar.getmember("blobs/sha256/" + manifest["layers"][2]["digest"][7:])
    data[layer.offset_data + 20] ^= 0xFF
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    run = venvseal("push", "--archive", damaged, f"{registry.host}/damaged:1")
    assert run.code == 1
    assert "another digest" in run.error and "damaged" in run.error
    status, _, _ = http(f"http://{registry.host}/v2/damaged/manifests/1", method="HEAD")
    assert status == 404


# Basic authentication (htpasswd) -----------------------------------------------------------


@dataclass
class Outputs:
    """Every output of the runs in a test, to search for secrets."""

    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run) -> Run:
        self.runs.append(run)
        return run

    def leaks(self, *secrets_: str) -> list[str]:
        return [s for s in secrets_ for r in self.runs if s in r.out or s in r.err]


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("basic-registry")
    htpasswd = base / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    auth = f"auth:\n  htpasswd:\n    realm: venvseal-test\n    path: {htpasswd}\n"
    with registry_server(base / "registry", auth) as server:
        yield server


def test_basic_auth_push_and_clear_401s(basic_registry: Server, small_image: tuple[Path, str],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host, outputs = basic_registry.host, Outputs()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    anonymous = outputs.add(venvseal("--json", "push", "--archive", small_image[0],
                                     f"{host}/private:1"))
    assert anonymous.code == 1
    assert anonymous.json()["ok"] is False
    assert f"the registry at {host} requires authentication (HTTP 401)" in anonymous.error
    assert "add credentials with docker login or to the docker config file" in anonymous.error
    docker_config(tmp_path / "wrong", {host: {"auth": auth_entry(USER, PASSWORD + "x")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "wrong"))
    wrong = outputs.add(venvseal("-v", "push", "--archive", small_image[0], f"{host}/private:1"))
    assert wrong.code == 1
    assert f"refused the credentials for {host} from {tmp_path / 'wrong'}" in wrong.error
    docker_config(tmp_path / "right", {host: {"auth": auth_entry(USER, PASSWORD)}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "right"))
    for flags in (["-v"], ["--json", "-v"]):
        pushed = outputs.add(venvseal(*flags, "push", "--archive", small_image[0],
                                      f"{host}/private:1"))
        assert pushed.code == 0, pushed.err
        assert small_image[1] in pushed.out
    basic = "Basic " + auth_entry(USER, PASSWORD)
    assert basic_registry.digest("private", "1", basic) == small_image[1]
    assert outputs.leaks(PASSWORD, auth_entry(USER, PASSWORD),
                         auth_entry(USER, PASSWORD + "x")) == []


# Token authentication (Bearer) -------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """The token endpoint of distribution's token auth spec: JWTs (RS256) for valid users.

    The key and its self-signed certificate are made with openssl; the registry trusts the
    certificate (rootcertbundle) and finds it in each token's x5c header.
    """

    ISSUER, SERVICE = "venvseal-test-issuer", "venvseal-test-registry"

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        openssl = require_tool("openssl", "openssl")
        self.key, self.cert = workdir / "token.key", workdir / "token.crt"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=venvseal test token service", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        self.der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        self.users, self.issued, self.scopes = users, list[str](), list[str]()
        self.openssl = openssl
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = service.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        user = None
        if authorization and authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            user = name if self.users.get(name) == password else None
        if user is None:
            return 401, b'{"details": "authentication required"}'
        access = []
        for scope in query.get("scope", []):
            self.scopes.append(scope)
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self.sign({"iss": self.ISSUER, "sub": user, "aud": query["service"][0],
                           "exp": int(time.time()) + 600, "nbf": int(time.time()) - 60,
                           "iat": int(time.time()) - 60, "jti": secrets.token_hex(8),
                           "access": access})
        self.issued.append(token)
        return 200, json.dumps({"token": token, "expires_in": 600}).encode()

    def sign(self, claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.der).decode()]}
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode()))
        signature = subprocess.run([self.openssl, "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), capture_output=True,
                                   check=True).stdout
        return f"{signing_input}.{b64url(signature)}"

    def registry_auth(self) -> str:
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.SERVICE}\n"
                f"    issuer: {self.ISSUER}\n    rootcertbundle: {self.cert}\n")


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[Server, TokenService]]:
    base = tmp_path_factory.mktemp("token-registry")
    tokens = TokenService(base, {USER: PASSWORD})
    thread = threading.Thread(target=tokens.server.serve_forever, daemon=True)
    thread.start()
    try:
        with registry_server(base / "registry", tokens.registry_auth()) as server:
            yield server, tokens
    finally:
        tokens.server.shutdown()
        tokens.server.server_close()


def test_bearer_token_flow(token_registry: tuple[Server, TokenService],
                           small_image: tuple[Path, str], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    server, tokens = token_registry
    outputs = Outputs()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    anonymous = outputs.add(venvseal("push", "--archive", small_image[0],
                                     f"{server.host}/tokened:1"))
    assert anonymous.code == 1
    assert "add credentials with docker login or to the docker config file" in anonymous.error
    docker_config(tmp_path / "right", {server.host: {"auth": auth_entry(USER, PASSWORD)}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "right"))
    pushed = outputs.add(venvseal("-v", "--json", "push", "--archive", small_image[0],
                                  f"{server.host}/tokened:1"))
    assert pushed.code == 0, pushed.err
    assert pushed.json()["digest"] == small_image[1]
    assert "repository:tokened:pull,push" in tokens.scopes or (
        "repository:tokened:push,pull" in tokens.scopes)
    assert tokens.issued
    client = Registry(server.host, credentials=Credentials(USER, PASSWORD))
    ref = parse_reference(f"{server.host}/tokened:1")
    assert client.get_manifest(ref).digest == small_image[1]
    assert outputs.leaks(PASSWORD, auth_entry(USER, PASSWORD), *tokens.issued) == []


# The bundled example's image (slow) --------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoImage:
    return demo_image(tmp_path_factory)


@pytest.mark.slow
def test_skopeo_copy_keeps_our_manifest_digest(demo: DemoImage, registry: Server,
                                               tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "skopeo")
    policy = tmp_path / "policy.json"  # skopeo copy insists on a signature policy
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    done = subprocess.run([skopeo, "copy", "--policy", str(policy), "--dest-tls-verify=false",
                           "--preserve-digests", f"oci-archive:{demo.archive}",
                           f"docker://{registry.host}/demo:1"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert registry.digest("demo", "1") == demo.digest


@pytest.mark.slow
def test_push_from_the_recipe_gives_the_local_digest(demo: DemoImage, registry: Server) -> None:
    pushed = venvseal("--json", "push", "--store", demo.store, "--uv-cache", demo.cache,
                      demo.project, f"{registry.host}/demo:2")
    assert pushed.code == 0, pushed.err
    assert pushed.json()["digest"] == demo.digest
    assert registry.digest("demo", "2") == demo.digest
    default_tag = venvseal("push", "--archive", demo.archive, f"{registry.host}/demo")
    assert default_tag.code == 0, default_tag.err
    assert default_tag.out.strip() == demo.digest
    assert registry.digest("demo", "1.0.0") == demo.digest
