"""Debian's package database: owners of files (through merged-/usr links) and the runtime
files of a package, on a hand-made root and on the host's real database."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from venvseal.oci import dpkg
from venvseal.oci.rootfs import RootCollector

P = PurePosixPath


@pytest.mark.parametrize(("path", "runtime"), [
    ("/usr/lib/x86_64-linux-gnu/libmariadb3/plugin/client_ed25519.so", True),
    ("/usr/lib/x86_64-linux-gnu/gconv/CP1252.so", True),
    ("/usr/share/zoneinfo/UTC", True),
    ("/etc/ldap/ldap.conf", True),
    ("/usr/share/doc/libc6/copyright", False),
    ("/usr/share/doc", False),
    ("/usr/share/man/man5/libsasl.5.gz", False),
    ("/usr/share/info/libc.info.gz", False),
    ("/usr/share/locale/de/LC_MESSAGES/libc.mo", False),
    ("/usr/share/lintian/overrides/libc6", False),
    ("/usr/include/stdio.h", False),
    ("/usr/lib/x86_64-linux-gnu/libz.a", False),
    ("/usr/lib/x86_64-linux-gnu/pkgconfig/zlib.pc", False),
    ("/usr/lib/x86_64-linux-gnu/cmake/Foo/FooConfig.cmake", False),
    ("/var/lib/dpkg/info/libc6.list", False),  # the running system's, not the program's
    ("/lib/systemd/system/x.service", False),
    ("/usr/share/i18n/charmaps/UTF-8.gz", False),
    ("/usr/bin/openssl", False),
    ("/sbin/ldconfig", False),
    ("/usr/lib/ssl/openssl.cnf", True),
    ("/", False),
    # A skipped folder's name is matched whole, not as the start of another name.
    ("/usr/share/docutils/writers/html.css", True),
    ("/usr/binfmt/x", True),
    ("/usr/share/doc-base/libc6", False),
    ("/usr/bin", False),
])
def test_runtime_files_leave_out_docs_headers_and_packaging(path: str, runtime: bool) -> None:
    assert dpkg.is_runtime_file(P(path)) is runtime


@pytest.mark.parametrize(("name", "package"), [
    ("libc6:amd64.list", "libc6"), ("tzdata.list", "tzdata"),
    ("libstdc++6:i386.list", "libstdc++6"),
])
def test_package_names(name: str, package: str) -> None:
    assert dpkg.package_name(name) == package


def fake_root(tmp_path: Path) -> Path:
    """A merged-/usr root whose libfoo1 lists its files through /lib, as Debian's do."""
    root = tmp_path / "root"
    lib = root / "usr/lib/x86_64-linux-gnu"
    (lib / "foo/plugins").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (lib / "libfoo.so.1.0").write_bytes(b"\x7fELF foo")
    (lib / "libfoo.so.1").symlink_to("libfoo.so.1.0")
    (lib / "foo/plugins/a.so").write_bytes(b"\x7fELF a")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "libfoo1:amd64.list").write_text("\n".join([
        "/.", "/lib", "/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu/libfoo.so.1.0",
        "/lib/x86_64-linux-gnu/libfoo.so.1", "/lib/x86_64-linux-gnu/foo",
        "/lib/x86_64-linux-gnu/foo/plugins", "/lib/x86_64-linux-gnu/foo/plugins/a.so",
        "/usr/share/doc/libfoo1/copyright"]) + "\n")
    (info / "libfoo1:amd64.md5sums").write_text("not a list\n")
    (info / "libfoo-dev:amd64.list").write_text(
        "/.\n/usr/include/foo.h\n/usr/lib/x86_64-linux-gnu/libfoo.so\n")
    return root


def test_owners_are_found_through_merged_usr_links(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    db = dpkg.read_db(root)
    assert db is not None
    resolve = RootCollector(root).resolve
    for path in ("/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/lib/x86_64-linux-gnu/libfoo.so.1",
                 "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0"):
        assert db.owner(P(path), resolve) == "libfoo1", path
    assert db.owner(P("/usr/lib/x86_64-linux-gnu/libfoo.so"), resolve) == "libfoo-dev"
    assert db.owner(P("/usr/lib/x86_64-linux-gnu/libbar.so.1"), resolve) is None
    assert db.runtime_files("libfoo1") == [
        P("/lib"), P("/lib/x86_64-linux-gnu"), P("/lib/x86_64-linux-gnu/libfoo.so.1.0"),
        P("/lib/x86_64-linux-gnu/libfoo.so.1"), P("/lib/x86_64-linux-gnu/foo"),
        P("/lib/x86_64-linux-gnu/foo/plugins"), P("/lib/x86_64-linux-gnu/foo/plugins/a.so")]
    assert db.runtime_files("libfoo-dev") == [P("/usr/lib/x86_64-linux-gnu/libfoo.so")]
    assert db.runtime_files("no-such-package") == []


def test_a_root_without_dpkg_has_no_database(tmp_path: Path) -> None:
    assert dpkg.read_db(tmp_path) is None


def test_the_hosts_database_knows_its_libraries() -> None:
    db = dpkg.read_db(Path("/"))
    assert db is not None
    resolve = RootCollector(Path("/")).resolve
    assert db.owner(P("/lib/x86_64-linux-gnu/libc.so.6"), resolve) == "libc6"
    assert db.owner(P("/usr/lib/x86_64-linux-gnu/libc.so.6"), resolve) == "libc6"
    assert db.owner(P("/usr/lib/x86_64-linux-gnu/libmariadb.so.3"), resolve) == "libmariadb3"
    files = db.runtime_files("libmariadb3")
    assert P("/usr/lib/x86_64-linux-gnu/libmariadb3/plugin/client_ed25519.so") in files
    assert not [f for f in files if str(f).startswith("/usr/share/doc")]
