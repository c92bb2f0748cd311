"""A ``uv init --package`` FastAPI app on PostgreSQL, built as root and as a user (slow).

The app as a new user writes it: src layout, a console script, the ``uv_build`` backend,
fastapi and uvicorn, and psycopg2 from its sdist (compiled in the deps stage against the
toolchain's libpq), with a recipe of ``[app]``, ``[toolchain]``, the deps hash and
``[verify]``. Each builder locks it, builds it, creates its table through the console script,
serves it with uvicorn through ``venvseal run`` and sends it requests that write and read
PostgreSQL (on 127.0.0.1, over TCP: the unprivileged user has no access to the server's
socket folder), then writes its image and queries the database from the unpacked image.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import EXCLUDE_NEWER, free_port, host_recipe, write
from support.postgres import Postgres, postgres_server
from support.projects import Builder
from support.rootfs import unpack

pytestmark = pytest.mark.slow

HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
LIBPQ = "/usr/lib/x86_64-linux-gnu/libpq.so.5"

# As `uv init --package --name notes` writes it, with the build backend's range moved to the
# releases before EXCLUDE_NEWER and the resolution pinned.
PYPROJECT = f"""\
[project]
name = "notes"
version = "0.1.0"
description = "Add your description here"
readme = "README.md"
requires-python = ">=3.11"
dependencies = [
    "fastapi==0.162.0",
    "psycopg2==2.9.13",
    "uvicorn==0.54.0",
]

[project.scripts]
notes = "notes:main"

[build-system]
requires = ["uv_build>=0.13.0,<0.14.0"]
build-backend = "uv_build"

[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"
"""

APP = '''\
"""Notes: a FastAPI app on PostgreSQL. libpq reads PGHOST, PGPORT, PGUSER and PGDATABASE."""

import os
import sys

import psycopg2
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Note(BaseModel):
    text: str


def query(sql, args=()):
    conn = psycopg2.connect("")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@app.post("/notes")
def add(note: Note):
    [(id_,)] = query("INSERT INTO notes (text) VALUES (%s) RETURNING id", (note.text,))
    return {"id": id_, "text": note.text}


@app.get("/notes")
def notes():
    rows = query("SELECT id, text FROM notes ORDER BY id")
    [(user, database)] = query("SELECT current_user, current_database()")
    return {"notes": [{"id": i, "text": t} for i, t in rows], "user": user,
            "database": database}


def main():
    if sys.argv[1:] == ["init-db"]:
        query("CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL)")
        print("notes: table created")
        return
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
'''

RECIPE = host_recipe("notes", "0.1.0", """
[verify]
imports = ["notes", "psycopg2.extras", "uvicorn"]
commands = [
  "@python@ -c 'import psycopg2.extensions as e; assert e.libpq_version() >= 150000'",
]
""")

QUERY = """\
import psycopg2
conn = psycopg2.connect("")
cur = conn.cursor()
cur.execute("SELECT text FROM notes ORDER BY id")
print(psycopg2.extensions.libpq_version(), [t for (t,) in cur.fetchall()])
"""


def make_app(root: Path) -> None:
    write(root / "pyproject.toml", PYPROJECT)
    write(root / "README.md", "")
    write(root / ".python-version", "3.11\n")
    write(root / ".gitignore", "__pycache__/\n")
    write(root / "src" / "notes" / "__init__.py", APP)
    write(root / "src" / "notes" / "py.typed", "")
    write(root / "venvseal.toml", RECIPE)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def libpq_version() -> int:
    """The host's libpq as psycopg2 reports it: PostgreSQL 15.18 is 150018."""
    done = subprocess.run(["pg_config", "--version"], capture_output=True, text=True,
                          check=True)
    major, minor = done.stdout.split()[1].split(".")[:2]
    return int(major) * 10000 + int(minor)


def request(port: int, method: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/notes", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def wait_until_served(server: subprocess.Popen[str], port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}):\n"
                                 f"{server.communicate()[0]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=5).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    server.kill()
    raise AssertionError(f"nothing served on {port}:\n{server.communicate()[0]}")


def test_a_fastapi_app_with_psycopg2_builds_serves_and_makes_an_image(
        builder: Builder, postgres: Postgres) -> None:
    project = builder.place(make_app, "notes")
    locked = builder.lock(project)
    assert locked.code == 0, locked.err
    lock = (project / "uv.lock").read_text()
    psycopg2 = lock[lock.index('[[package]]\nname = "psycopg2"') + 1:]
    psycopg2 = psycopg2[:psycopg2.index("\n[[package]]")]
    assert "sdist = " in psycopg2 and "linux" not in psycopg2  # Windows wheels only
    started = time.monotonic()
    built = builder.build(project)
    seconds = time.monotonic() - started
    assert built.code == 0, built.err
    assert seconds < 600, f"the build took {seconds:.0f} s"
    closure = Path(built.json()["path"])
    assert closure.is_relative_to(builder.store)
    assert built.json()["verified"]["imports"] == 3 and built.json()["verified"]["commands"] == 1
    if builder.user is not None:
        assert closure.stat().st_uid == builder.user.uid

    # The root project is installed, with its script; psycopg2 was compiled against libpq.
    site = closure / "lib/python3.11/site-packages"
    assert (site / "notes-0.1.0.dist-info" / "RECORD").is_file()
    assert (site / "notes" / "__init__.py").read_text() == APP
    assert (closure / "bin" / "notes").read_text().startswith(
        f"#!/venvseal/store/{closure.name}/bin/python")
    wheel = (site / "psycopg2-2.9.13.dist-info" / "WHEEL").read_text()
    assert "Root-Is-Purelib: false" in wheel and "Tag: cp311-cp311-linux_x86_64" in wheel
    [extension] = (site / "psycopg2").glob("_psycopg.cpython-311-*.so")
    traced = subprocess.run([HOST_LOADER, str(extension)], capture_output=True, text=True,
                            env={"LD_TRACE_LOADED_OBJECTS": "1"}, check=True)
    assert f"libpq.so.5 => {LIBPQ}" in traced.stdout, traced.stdout
    assert "not found" not in traced.stdout, traced.stdout

    # A role and a database of the builder's own, reached over TCP.
    role = f"notes_{builder.who}"
    postgres.sql(f"CREATE ROLE {role} LOGIN")
    postgres.sql(f"CREATE DATABASE {role} OWNER {role}")
    pg = {"PGHOST": postgres.host, "PGPORT": str(postgres.port), "PGUSER": role,
          "PGDATABASE": role}
    env_args = [arg for key, value in pg.items() for arg in ("--env", f"{key}={value}")]
    common = ("--store", builder.store, "--uv-cache", builder.uv_cache)
    init = builder.venvseal("run", project, *common, *env_args, "--", "@out@/bin/notes",
                            "init-db")
    assert init.code == 0, init.err
    assert init.out.strip() == "notes: table created"

    port = free_port()
    server = builder.start("run", project, *common, *env_args, "--env", f"PORT={port}", "--",
                           "@out@/bin/notes")
    try:
        wait_until_served(server, port)
        assert request(port, "POST", {"text": "sealed"}) == {"id": 1, "text": "sealed"}
        assert request(port, "POST", {"text": f"by {builder.who}"}) == {
            "id": 2, "text": f"by {builder.who}"}
        assert request(port, "GET") == {
            "notes": [{"id": 1, "text": "sealed"}, {"id": 2, "text": f"by {builder.who}"}],
            "user": role, "database": role}
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught; `venvseal run`
    # passes that status on as a shell does (128 + SIGTERM).
    assert server.returncode == 128 + signal.SIGTERM, output
    assert "Shutting down" in output, output
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output, output
    assert '"POST /notes HTTP/1.1" 200' in output and "Finished server process" in output
    assert postgres.sql("SELECT text FROM notes ORDER BY id", database=role).split("\n")[:2] == [
        "sealed", f"by {builder.who}"]

    # psycopg2 straight from the closure's Python, then from the unpacked image.
    direct = builder.venvseal("run", project, *common, *env_args, "--", "@python@", "-c", QUERY)
    assert direct.code == 0, direct.err
    expected = f"{libpq_version()} ['sealed', 'by {builder.who}']"
    assert direct.out.strip() == expected
    archive = builder.home / "notes.tar"
    image = builder.venvseal("--json", "image", *common, "-o", archive, project)
    assert image.code == 0, image.err
    assert archive.stat().st_size > 1 << 20
    unpacked = unpack(archive)
    try:
        python = f"/venvseal/store/{closure.name}/bin/python"
        assert (unpacked.root / python.lstrip("/")).exists()
        assert (unpacked.root / LIBPQ.lstrip("/")).exists()
        # The image has no shell or env(1): libpq's variables are set by the script itself.
        done = unpacked.run([python, "-c", f"import os\nos.environ.update({pg!r})\n{QUERY}"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected
    finally:
        shutil.rmtree(unpacked.root)
