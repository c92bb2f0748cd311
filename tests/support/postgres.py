"""A real PostgreSQL server (Debian's package) on 127.0.0.1, for the end-to-end tests."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import free_port


@dataclass(frozen=True)
class Postgres:
    """Where the server listens; user ``postgres`` with trust authentication."""

    host: str
    port: int
    bindir: Path

    def sql(self, query: str, database: str = "postgres") -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / "psql"), "-h", self.host,
             "-p", str(self.port), "-U", "postgres", "-d", database, "-Atc", query],
            capture_output=True, text=True, check=False, cwd="/")
        assert done.returncode == 0, done.stderr
        return done.stdout


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throw-away cluster, run as user postgres (the tests run as root).

    Its folder is a fresh one in /tmp, not pytest's tmp_path: user postgres cannot enter
    root's private /tmp/pytest-of-root.
    """
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert initdbs, ("PostgreSQL is not installed: apt-get install postgresql (scripts/setup "
                     "installs it)")
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL as user postgres needs root (runuser)")
    bindir = initdbs[-1].parent
    user = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="venvseal-pg-"))
    os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()

    def pg(*argv: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True,
                              text=True, cwd=root, check=False)
        log = root / "server.log"
        assert done.returncode == 0, done.stdout + done.stderr + (
            log.read_text() if log.exists() else "")

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
           "-E", "UTF8", "--no-sync")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
           "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start")
        try:
            yield Postgres(host="127.0.0.1", port=port, bindir=bindir)
        finally:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
