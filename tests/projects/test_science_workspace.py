"""A uv workspace app on numpy, scipy and pillow wheels and three sdists, built as root and as
a user (slow).

The app (fixtures/science) as a user writes it: a root project ``sciapp`` (uv_build, a
console script) and two members, ``analysis`` on the manylinux wheels of numpy 2.2.6, scipy
and pillow, ``storage`` on psycopg2, python-ldap and mysqlclient compiled from their sdists
in the deps stage against the toolchain's libpq, libldap/libsasl2 and libmariadb. The recipe
is ``[app]``, ``[toolchain]``, the deps hash and ``[verify]``. Each builder locks it, builds
it, and through ``venvseal run``: multiplies matrices (OpenBLAS from numpy.libs), solves a
dense system (LAPACK) and a sparse one (SuperLU), encodes and decodes a PNG and a JPEG, and
talks to PostgreSQL, MariaDB (an ed25519 login: libmariadb dlopens its client plugin) and
slapd (bind, add, search). Root and the user make the same closure.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import EXCLUDE_NEWER, Run
from support.postgres import Postgres, postgres_server
from support.projects import Builder
from support.servers import Account, mariadb, slapd

from venvseal.elf.patchelf import read_elf

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "science"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")  # the toolchain's (root "/") library folder
SITE = "lib/python3.11/site-packages"
# Each sdist's extension module and the library of the toolchain it must load.
EXTENSIONS = {
    "psycopg2/_psycopg.cpython-311-x86_64-linux-gnu.so": "libpq.so.5",
    "_ldap.cpython-311-x86_64-linux-gnu.so": "libldap-2.5.so.0",
    "MySQLdb/_mysql.cpython-311-x86_64-linux-gnu.so": "libmariadb.so.3",
}
# What the first builder made (its closure's name, the deps hash it declared): the second
# must make the same from the same inputs (CI runs both, root first).
CLOSURES: dict[str, tuple[str, str]] = {}


def make_science(folder: Path) -> None:
    shutil.copytree(FIXTURE, folder)
    assert f'exclude-newer = "{EXCLUDE_NEWER}"' in (folder / "pyproject.toml").read_text()


def header_define(header: str, name: str) -> str:
    """A ``#define`` of one of the toolchain's -dev headers (what the sdists compiled with)."""
    found = re.search(rf"^#define {name} \"?([^\"\s]+)", Path(header).read_text(), re.M)
    assert found is not None, f"{name} not in {header}"
    return found.group(1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def mysql() -> Iterator[Account]:
    with mariadb() as account:
        yield account


@pytest.fixture
def ldap_url() -> Iterator[str]:
    with slapd() as url:  # a fresh, empty directory: the app adds its base entry
        yield url


def lines(run: Run) -> list[str]:
    assert run.code == 0, run.err
    return run.out.splitlines()


def test_a_science_workspace_builds_and_computes_as_root_and_as_a_user(
        builder: Builder, postgres: Postgres, mysql: Account, ldap_url: str) -> None:
    project, built = builder.place_and_build(make_science, "science")
    result = built.json()
    closure, relinked = Path(result["path"]), Path(result["relinked"])
    assert result["verified"] == {"imports": 10, "commands": 3, "elf_files": 0, "skipped": {}}
    if builder.user is not None:
        assert closure.stat().st_uid == builder.user.uid

    # The root project and both members are installed; the root with its script.
    site = closure / SITE
    for dist in ("sciapp-1.0.0", "analysis-0.2.0", "storage-0.3.0"):
        assert (site / f"{dist}.dist-info" / "RECORD").is_file(), dist
    assert (closure / "bin" / "sciapp").is_file()

    # Each sdist's extension needs its library and finds it in the toolchain, by the run
    # path relinking gave it.
    for module, soname in EXTENSIONS.items():
        info = read_elf(relinked / SITE / module)
        assert soname in info.needed, (module, info.needed)
        assert info.runpath == (str(LIBDIR),), (module, info.runpath)
        assert (LIBDIR / soname).exists()

    def app(*argv: str) -> list[str]:
        return lines(builder.venvseal("run", project, "--store", builder.store, "--uv-cache",
                                      builder.uv_cache, "--", "@out@/bin/sciapp", *argv))

    assert app("compute") == ["matrix 486", "solve 2.0 3.0 1.0 1.0 1.0 1.0"]
    assert app("pictures") == ["PNG 64x48 RGB exact=True near=True",
                               "JPEG 64x48 RGB exact=False near=True"]
    assert app("versions") == [
        "libpq " + header_define("/usr/include/postgresql/pg_config.h", "PG_VERSION_NUM"),
        "libmariadb " + header_define("/usr/include/mariadb/mariadb_version.h",
                                      "MARIADB_PACKAGE_VERSION"),
        "libldap " + header_define("/usr/include/ldap_features.h", "LDAP_VENDOR_VERSION")]
    loaded = app("libraries")
    assert {Path(p).parent for p in loaded} == {LIBDIR}, loaded
    assert {Path(p).name.split(".so")[0] for p in loaded} == {
        "libpq", "libldap-2.5", "liblber-2.5", "libsasl2", "libmariadb"}, loaded

    # The three clients against live servers on 127.0.0.1.
    major = int(postgres.sql("SHOW server_version_num")) // 10000
    assert app("postgres", postgres.host, str(postgres.port)) == [f"postgres 42 postgres {major}"]
    assert app("mysql", str(mysql.port), mysql.user, mysql.password) == [
        f"mysql 42 {mysql.user}@%"]
    assert app("ldap", ldap_url) == ["ldap dc=example,dc=org Example"]

    # A second build in the same store reuses everything; root and the user make the same.
    again = builder.build(project)
    assert again.code == 0, again.err
    assert again.json()["path"] == str(closure)
    assert again.json()["reused"] and again.json()["deps_reused"]
    declared = re.search(r'^hash = "(sha256-[^"]+)"', (project / "venvseal.toml").read_text(),
                         re.M)
    assert declared is not None
    made = CLOSURES.setdefault("closure", (closure.name, declared.group(1)))
    assert (closure.name, declared.group(1)) == made, builder.who
