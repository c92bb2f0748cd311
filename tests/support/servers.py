"""Real servers the image tests talk to, each started on 127.0.0.1 in a temp folder as the
unprivileged user its Debian package made (mysql, openldap), and stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import free_port

SETUP = "run scripts/setup, which installs it"


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    assert found is not None, f"{name} is not installed (Debian package {package}): {SETUP}"
    return found


def _owned_folder(user: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"venvseal-{user}-"))
    shutil.chown(folder, user, user)
    folder.chmod(0o750)
    return folder


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not listen on {port}:\n{log.read_text()[-3000:]}")


@contextmanager
def _running(argv: list[str], user: str, port: int, log: Path, what: str) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(["runuser", "-u", user, "--", *argv], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Account:
    port: int
    user: str
    password: str


@contextmanager
def mariadb(user: str = "edu", password: str = "ed-pass") -> Iterator[Account]:
    """A MariaDB server with ``user`` authenticated by the ed25519 plugin, which the client
    can only answer with its own plugin (client_ed25519.so), dlopened at run time."""
    install = _tool("mariadb-install-db", "mariadb-server")
    server = _tool("mariadbd", "mariadb-server")
    client = _tool("mariadb", "mariadb-client")
    data = _owned_folder("mysql")
    port = free_port()
    sock = data / "mysqld.sock"
    try:
        done = subprocess.run(["runuser", "-u", "mysql", "--", install, "--no-defaults",
                               f"--datadir={data}/db", "--auth-root-authentication-method=normal",
                               "--skip-test-db"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        argv = [server, "--no-defaults", f"--datadir={data}/db", f"--socket={sock}",
                f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={data}/pid",
                "--skip-log-bin", "--innodb-buffer-pool-size=16M"]
        with _running(argv, "mysql", port, data / "server.log", "mariadbd"):
            sql = (f"INSTALL SONAME 'auth_ed25519'; CREATE USER '{user}'@'%' IDENTIFIED VIA "
                   f"ed25519 USING PASSWORD('{password}');")
            done = subprocess.run([client, "--no-defaults", f"--socket={sock}", "-uroot",
                                   "-e", sql], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            yield Account(port, user, password)
    finally:
        shutil.rmtree(data, ignore_errors=True)


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
pidfile {folder}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw secret
directory {folder}/db
"""


@contextmanager
def slapd() -> Iterator[str]:
    """An OpenLDAP server; its ldap:// URL."""
    binary = _tool("slapd", "slapd")
    folder = _owned_folder("openldap")
    (folder / "db").mkdir()
    shutil.chown(folder / "db", "openldap", "openldap")
    conf = folder / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(folder=folder))
    conf.chmod(0o644)
    port = free_port()
    url = f"ldap://127.0.0.1:{port}/"
    try:
        with _running([binary, "-d", "0", "-f", str(conf), "-h", url], "openldap", port,
                      folder / "slapd.log", "slapd"):
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_pem: str


@contextmanager
def tls_server(folder: Path) -> Iterator[TlsServer]:
    """A TLS server for "localhost" whose certificate a fresh test CA signed (openssl)."""
    openssl = _tool("openssl", "openssl")

    def run(*argv: str) -> None:
        done = subprocess.run([openssl, *argv], cwd=folder, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=venvseal test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (folder / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello\n")
            except (ssl.SSLError, OSError):
                pass  # a client that refused our certificate: what one test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield TlsServer(listener.getsockname()[1], (folder / "ca.pem").read_text())
    finally:
        stop.set()
        thread.join()
        listener.close()
