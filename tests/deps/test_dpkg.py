"""Reading a toolchain root's dpkg database, and choosing the packages a build reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write

from venvseal.deps import dpkg

STATUS = """\
Package: libpq-dev
Status: install ok installed
Architecture: amd64
Version: 15.18-0+deb12u1
Depends: libpq5 (= 15.18-0+deb12u1), libssl-dev
Description: header files for libpq5
 a continuation line: with a colon
 .

Package: libpq5
Status: install ok installed
Architecture: amd64
Version: 15.18-0+deb12u1
Depends: libc6 (>= 2.34)

Package: libssl-dev
Status: install ok installed
Architecture: amd64
Version: 3.0.17-1~deb12u2
Depends: libssl3 (= 3.0.17-1~deb12u2)

Package: libssl3
Status: install ok installed
Architecture: amd64
Version: 3.0.17-1~deb12u2
Pre-Depends: libc6 (>= 2.34)

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u13

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u13

Package: gcc-12
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14+deb12u1
Depends: cpp-12 (= 12.2.0-14+deb12u1), libcc1-0 | libc-dev:any

Package: cpp-12
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14+deb12u1

Package: libc6-dev
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u13
Provides: libc-dev

Package: vim
Status: install ok installed
Architecture: amd64
Version: 2:9.0.1378-2
Depends: libc6

Package: removed-dev
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def test_parse_status_reads_installed_packages() -> None:
    found = dpkg.parse_status(STATUS)
    assert "removed-dev" not in found  # only its configuration files are left
    assert found["libpq-dev"].version == "15.18-0+deb12u1"
    assert found["libpq-dev"].depends == ("libpq5", "libssl-dev")
    assert found["libssl3"].depends == ("libc6",)  # Pre-Depends counts
    assert found["gcc-12"].depends == ("cpp-12", "libcc1-0", "libc-dev")
    assert found["libc6-dev"].provides == ("libc-dev",)
    # Two architectures of one name are told apart.
    assert {"libc6:amd64", "libc6:i386"} <= found.keys() and "libc6" not in found


def test_build_packages_are_dev_packages_compilers_and_what_they_depend_on() -> None:
    chosen = dpkg.build_packages(dpkg.parse_status(STATUS))
    assert sorted(chosen) == ["cpp-12", "gcc-12", "libc6-dev", "libc6:amd64", "libc6:i386",
                              "libpq-dev", "libpq5", "libssl-dev", "libssl3"]
    assert "vim" not in chosen


def test_a_root_without_a_dpkg_database_has_no_packages(tmp_path: Path) -> None:
    assert dpkg.installed(tmp_path) == {}
    write(tmp_path / "var/lib/dpkg/status", STATUS)
    assert dpkg.installed(tmp_path)["libpq5"].version == "15.18-0+deb12u1"


@pytest.mark.parametrize(("field", "names"), [
    ("", ()),
    ("a", ("a",)),
    ("a (>= 1.0), b", ("a", "b")),
    ("a | b:any (<< 2)", ("a", "b")),
    ("python3:any, libx11-6 (>= 2:1.6)", ("python3", "libx11-6")),
])
def test_relationship_fields(field: str, names: tuple[str, ...]) -> None:
    assert dpkg._names(field) == names
