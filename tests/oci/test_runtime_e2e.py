"""Images that do the app's real work (issue 14), run from their unpacked layers as an
unprivileged user under bwrap, against real servers the tests start on 127.0.0.1.

One app (fixtures/clients: MySQLdb and python-ldap compiled from their sdists) is built,
traced ([verify] runs its selftest under strace) and made into an image once. In the image:
MySQLdb logs in to MariaDB as a user of the ed25519 plugin (libmariadb dlopens its client
plugin, which only the package-aware closure brings); python-ldap binds to slapd with SASL
DIGEST-MD5 (a libsasl2 plugin the trace saw loaded); TLS verifies a test CA through the
image's CA bundle; getaddrinfo and glibc's iconv (gconv modules) work. Each also runs once
with the thing the closure added removed, to show that it is what makes the difference.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import uv_lock, venvseal
from support.rootfs import Unpacked, unpack
from support.servers import mariadb, slapd, tls_server

FIXTURE = Path(__file__).parent / "fixtures" / "clients"
PLUGINS = Path("usr/lib/x86_64-linux-gnu/libmariadb3/plugin")
SASL = Path("usr/lib/x86_64-linux-gnu/sasl2")
BUNDLE = Path("etc/ssl/certs/ca-certificates.crt")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Built:
    project: Path
    store: Path
    cache: Path
    closure: dict[str, Any]  # venvseal --json closure
    archive: Path


def uv_cache() -> Path:
    return Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests")) / "uv"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("clients")
    project = base / "clients"
    shutil.copytree(FIXTURE, project)
    cache = uv_cache()
    uv_lock(project, cache)
    store = base / "store"
    made = venvseal("--json", "build", "--update-hash", "--store", store, "--uv-cache", cache,
                    project)
    assert made.code == 0, made.err
    listed = venvseal("--json", "closure", "--store", store, "--uv-cache", cache, project)
    assert listed.code == 0, listed.err
    archive = base / "clients.tar"
    image = venvseal("--json", "image", "--store", store, "--uv-cache", cache, project, "-o",
                     archive)
    assert image.code == 0, image.err
    return Built(project, store, cache, listed.json(), archive)


@pytest.fixture
def image(built: Built) -> Iterator[Unpacked]:
    unpacked = unpack(built.archive)
    try:
        yield unpacked
    finally:
        shutil.rmtree(unpacked.root)


def app(image: Unpacked, *argv: str) -> tuple[int, str]:
    done = image.run([*image.config["Entrypoint"], *argv])
    return done.returncode, done.stdout + done.stderr


def test_closure_lists_why_each_runtime_file_came(built: Built) -> None:
    why = {f["path"]: f["why"] for f in built.closure["files"]}
    plugin = "/" + str(PLUGINS / "client_ed25519.so")
    assert why[plugin].startswith("package libmariadb3 of /")
    assert why[plugin].endswith("/libmariadb.so.3")
    assert why["/" + str(SASL / "libdigestmd5.so")] in ("opened by verify.imports",
                                                        "opened by verify.commands[0]")
    assert why["/usr/lib/x86_64-linux-gnu/gconv/CP1252.so"] == "opened by verify.commands[0]"
    assert why["/usr/lib/x86_64-linux-gnu/libmariadb.so.3"].startswith("library of lib/")
    assert not [p for p in why if p.startswith(("/usr/share/doc", "/usr/share/man",
                                                "/usr/include", "/etc/shadow"))]
    # The build-only /usr/local/bin of toolchain.path stays out of the image's PATH.
    assert built.closure["image_path"] == ["/usr/bin", "/bin"]


def test_selftest_runs_as_nobody(image: Unpacked) -> None:
    code, out = app(image, "selftest")
    assert code == 0, out
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert "DIGEST-MD5" in lines["sasl"].split()
    assert lines["iconv"] == "e9"  # U+00E9 in CP1252, by glibc's gconv module
    assert "127.0.0.1" in lines["getaddrinfo"]
    assert int(lines["ca"]) > 50  # the image's CA bundle
    assert image.run(["/venvseal/nothing"]).returncode != 0  # what fails, fails
    env = image.env
    assert env["PATH"].split(":")[1:] == ["/usr/bin", "/bin"]


def test_mysqldb_logs_in_with_the_ed25519_plugin(image: Unpacked) -> None:
    with mariadb() as account:
        argv = ("mysql", str(account.port), account.user, account.password)
        code, out = app(image, *argv)
        assert (code, out.strip()) == (0, f"mysql {account.user}@%"), out
        code, out = app(image, "mysql", str(account.port), account.user, "wrong")
        assert code != 0 and "Access denied" in out
        shutil.rmtree(image.root / PLUGINS)  # what the package-aware closure added
        code, out = app(image, *argv)
        assert code != 0 and "client_ed25519" in out, out


def test_python_ldap_binds_with_a_sasl_mechanism(image: Unpacked) -> None:
    with slapd() as url:
        code, out = app(image, "ldap", url)
        assert (code, out.strip()) == (0, "ldap INVALID_CREDENTIALS"), out  # slapd judged it
        shutil.rmtree(image.root / SASL)  # what the trace added
        code, out = app(image, "ldap", url)
        assert (code, out.strip()) == (0, "ldap AUTH_UNKNOWN"), out  # no mechanism here


def test_tls_verifies_through_the_images_ca_bundle(image: Unpacked, tmp_path: Path) -> None:
    with tls_server(tmp_path) as server:
        code, out = app(image, "tls", "localhost", str(server.port))
        assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in out, out
        bundle = image.root / BUNDLE
        bundle.chmod(0o644)
        with bundle.open("a") as f:  # as a derived image would add its own CA
            f.write(server.ca_pem)
        code, out = app(image, "tls", "localhost", str(server.port))
        assert code == 0 and out.startswith("tls TLSv1.3"), out
