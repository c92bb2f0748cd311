"""Finding and replacing build-time references, same length, in text and binary files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from venvseal.elf.refs import (
    DEFAULT_BUILD_ROOT,
    Reference,
    ReferencesRemainError,
    assert_clean,
    scan,
    strip_references,
)

STORE_HASH = b"0c4fvhvhaqd6sfa0yqndkknz5z8x3gkg"  # 32 nix32 characters
STORE_PATH = b"/nix/store/" + STORE_HASH + b"-python3-3.14.0"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_text_reference_replaced_with_same_length(tmp_path: Path) -> None:
    ref = b"/venvseal-build/cache/sdists-v11/pypi/xmlsec/1.3.17/hAshC-fdAvCezMP3/src/ds.c"
    f = write(tmp_path / "a.txt", b'compiled from "' + ref + b'" today\n')
    report = scan(tmp_path)
    assert report.references == (Reference(ref, (Path("a.txt"),)),)

    assert strip_references(tmp_path, report) == frozenset({Path("a.txt")})
    expected = b'compiled from "/' + b"e" * (len(ref) - 1) + b'" today\n'
    assert f.read_bytes() == expected
    assert scan(tmp_path).references == ()
    assert_clean(tmp_path)


def test_binary_reference_replaced_keeping_offsets(tmp_path: Path) -> None:
    ref = b"/venvseal-build/venv/lib/python3.14/site-packages"
    rpath = ref + b":/usr/lib"  # ':' is a path character: the whole token goes
    data = bytes(range(256)) + ref + b"\0" + bytes(range(255, -1, -1)) + rpath + b"\0"
    f = write(tmp_path / "lib" / "x.so", data)
    report = scan(tmp_path)
    assert [r.text for r in report.references] == [ref, rpath]
    strip_references(tmp_path, report)
    new = f.read_bytes()
    assert len(new) == len(data)
    assert b"venvseal-build" not in new
    expected = data.replace(rpath, b"/" + b"e" * (len(rpath) - 1))
    assert new == expected.replace(ref, b"/" + b"e" * (len(ref) - 1))
    assert_clean(tmp_path)


def test_nix_store_path_keeps_name_and_loses_hash(tmp_path: Path) -> None:
    f = write(tmp_path / "rpath.bin", b"\0" + STORE_PATH + b"/lib\0")
    report = scan(tmp_path)
    assert [r.text for r in report.references] == [STORE_PATH]
    strip_references(tmp_path, report)
    assert f.read_bytes() == b"\0/nix/store/" + b"e" * 32 + b"-python3-3.14.0/lib\0"
    assert_clean(tmp_path)


@pytest.mark.parametrize("text", [
    b"/nix/store/" + STORE_HASH[:31] + b"-short",  # 31 characters
    b"/nix/store/" + b"e" * 32 + b"-already-stripped",  # e is not a nix32 digit
    b"/nix/store/" + STORE_HASH + b"no-dash",
    b"/venvseal-builder/x",  # another directory that merely starts alike
    b"venvseal-build/relative",
])
def test_non_references_are_not_matched(tmp_path: Path, text: bytes) -> None:
    write(tmp_path / "f", b"<" + text + b">")
    assert scan(tmp_path).references == ()


def test_bare_build_root_is_a_reference(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b'cd "/venvseal-build"\n')
    strip_references(tmp_path, scan(tmp_path))
    assert f.read_bytes() == b'cd "/eeeeeeeeeeeeee"\n'


def test_custom_prefix_and_path_characters(tmp_path: Path) -> None:
    token = b"/tmp/b1/src/a_b+c-d=e~f@g%h,i:j.k"
    f = write(tmp_path / "f", token + b" /tmp/b2/other\n")
    report = scan(tmp_path, [b"/tmp/b1/"])
    assert [r.text for r in report.references] == [token]
    strip_references(tmp_path, report)
    assert f.read_bytes() == b"/" + b"e" * (len(token) - 1) + b" /tmp/b2/other\n"


def test_report_is_sorted_and_summarised(tmp_path: Path) -> None:
    write(tmp_path / "b" / "two", b"/venvseal-build/src x /venvseal-build/a")
    write(tmp_path / "a" / "one", b"/venvseal-build/src\n/venvseal-build/src\n")
    write(tmp_path / "c", b"nothing here")
    write(tmp_path / "empty", b"")
    report = scan(tmp_path)
    assert report.references == (
        Reference(b"/venvseal-build/a", (Path("b/two"),)),
        Reference(b"/venvseal-build/src", (Path("a/one"), Path("b/two"))),
    )
    assert report.distinct_count == 2
    assert report.files_count == 2
    assert report.summary() == "2 references in 2 files"
    assert report.prefixes == (DEFAULT_BUILD_ROOT,)


def test_large_file_is_searched_and_fixed(tmp_path: Path) -> None:
    ref = b"/venvseal-build/tmp/build-xyz/obj.o"
    size = 8 << 20
    f = tmp_path / "big.a"
    with open(f, "wb") as out:
        out.write(b"\x01" * (size - 100) + ref + b"\0" * (100 - len(ref)))
    report = scan(tmp_path)
    assert [r.text for r in report.references] == [ref]
    strip_references(tmp_path, report)
    assert f.stat().st_size == size
    assert_clean(tmp_path)


def test_symlinks_are_not_followed_but_their_targets_are_checked(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside" / "f", b"/venvseal-build/src/x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "to-outside").symlink_to(outside)
    (root / "dangling").symlink_to("/venvseal-build/venv/bin/python3")
    report = scan(root)
    assert report.references == (
        Reference(b"/venvseal-build/venv/bin/python3", (Path("dangling"),)),
    )
    strip_references(root, report)
    assert os.readlink(root / "dangling") == "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
    assert outside.read_bytes() == b"/venvseal-build/src/x"
    assert_clean(root)


def test_strip_applies_only_what_the_report_lists(tmp_path: Path) -> None:
    f = write(tmp_path / "pkg" / "mod.py", b'A = "/venvseal-build/src/a"\n')
    report = scan(tmp_path)
    f.write_bytes(f.read_bytes() + b'B = "/venvseal-build/home/.cache"\n')
    assert strip_references(tmp_path, report) == frozenset({Path("pkg/mod.py")})
    with pytest.raises(ReferencesRemainError) as caught:
        assert_clean(tmp_path)
    message = str(caught.value)
    assert "1 reference in 1 file to build-time paths remain" in message
    assert f"/venvseal-build/home/.cache in {tmp_path / 'pkg' / 'mod.py'}" in message
    assert "/venvseal-build/src/a" not in message


def test_unchanged_tree_reports_nothing_changed(tmp_path: Path) -> None:
    write(tmp_path / "f", b"clean")
    report = scan(tmp_path)
    assert report.references == ()
    assert strip_references(tmp_path, report) == frozenset()
