"""A real PostgreSQL server (Debian's package) on 127.0.0.1, for the end-to-end tests."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Postgres:
    """Where the server listens; user ``postgres`` with trust authentication."""

    host: str
    port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Start a throw-away cluster (as user postgres: the tests run as root).

    Its folder is a fresh one in /tmp, not pytest's tmp_path: user postgres cannot enter
    root's private /tmp/pytest-of-root.
    """
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert bins, "PostgreSQL is not installed: apt-get install postgresql (scripts/setup does)"
    pg = bins[-1]
    workdir = Path(tempfile.mkdtemp(prefix="venvseal-pg-"))
    subprocess.run(["chown", "postgres", str(workdir)], check=True)
    data, port = workdir / "data", _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, f"{pg}/initdb", "-D", str(data), "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True)
    subprocess.run([*as_postgres, f"{pg}/pg_ctl", "-D", str(data), "-w", "-l",
                    str(workdir / "log"), "-o", f"-h 127.0.0.1 -p {port} -k {workdir}",
                    "start"], check=True, capture_output=True)
    try:
        yield Postgres("127.0.0.1", port)
    finally:
        subprocess.run([*as_postgres, f"{pg}/pg_ctl", "-D", str(data), "-m", "fast", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
