"""The deps stage reads each file once: the search for build paths rides on the NAR hash's read.

``normalise_venv`` searches only what it edits; ``hash_normalised`` searches every other file
as it hashes it, and replaces what it finds there as normalise_venv would have (same length,
then build-ids and RECORDs), hashing again. Each case puts references somewhere else; the
venv must come out clean, its RECORDs true, its hash that of its final bytes, and the same
whether the walk sealed it or not.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from support.unprivileged import User

from deps.test_normalise import (
    SITE,
    assert_record_matches,
    host_strip,
    make_venv,
    needs_toolchain,
    tree,
    write_record,
)
from deps.test_normalise import write as put
from venvseal.deps.normalise import NormaliseReport, hash_normalised, normalise_venv
from venvseal.deps.strip import guarded
from venvseal.elf.refs import DEFAULT_BUILD_ROOT, NIX_STORE_DIR, Spotter, scan
from venvseal.store.core import CANONICAL_MTIME
from venvseal.store.nar import BUFFER_SIZE, NarResult, nar_hash

ROOT = DEFAULT_BUILD_ROOT.decode()  # what make_venv(..., None) writes, the deps stage's own
STORE_PATH = "/nix/store/" + "0123456789abcdfghijklmnpqrsvwxyz"[:32] + "-gcc-13/bin/gcc"


def no_references(venv: Path) -> None:
    put(venv / SITE / "demo" / "__init__.py", "SRC = 'nowhere'\n")
    write_record(venv, venv / SITE / "demo-1.0.dist-info")  # lists the file as it is now


def near_misses(venv: Path) -> None:
    """Both literals, in no reference: the walk names the files, the search clears them."""
    no_references(venv)
    put(venv / SITE / "demo" / "near.txt", f"{ROOT.rstrip('/')}x and /nix/store/short\n")


def symlink(venv: Path) -> None:
    (venv / SITE / "demo" / "data").symlink_to(f"{ROOT}src/demo/data")


def store_path(venv: Path) -> None:
    put(venv / SITE / "demo" / "cc.txt", f"CC = {STORE_PATH}\n")


def large_file(venv: Path) -> None:
    """References on both sides of the hash's buffer size, in a file read in pieces."""
    data = bytearray(os.urandom(3 * BUFFER_SIZE + 123))
    for offset in (5, BUFFER_SIZE - 7, 2 * BUFFER_SIZE - 3, len(data) - 40):
        text = f"{ROOT}src/big".encode()
        data[offset:offset + len(text)] = text
    put(venv / SITE / "demo" / "blob.bin", bytes(data))


CASES: dict[str, Callable[[Path], None]] = {
    "none": no_references,
    "near misses": near_misses,
    "text": lambda venv: None,  # make_venv's __init__.py names the build root
    "symlink": symlink,
    "store path": store_path,
    "large file": large_file,
}


def normalised(tmp_path: Path, venv: Path, strip: Callable[[Sequence[Path]], None],
               build_root: bytes = DEFAULT_BUILD_ROOT) -> tuple[NarResult, NormaliseReport]:
    """The venv normalised and hashed in two copies, sealed by the walk and not; both must
    give the same bytes, hash and report, with no reference left and every RECORD true.
    The sealed copy's (hash, report)."""
    results = []
    for name, seal in (("sealed", CANONICAL_MTIME), ("unsealed", None)):
        copy = tmp_path / name
        shutil.copytree(venv, copy, symlinks=True)
        report = normalise_venv(copy, strip=guarded(strip), build_root=build_root)
        hashed, report = hash_normalised(copy, report, seal_mtime=seal, build_root=build_root)
        assert hashed.hash == nar_hash(copy).hash  # the hash of the final bytes
        assert not scan(copy, (build_root,)).references
        assert_record_matches(copy / SITE / "demo-1.0.dist-info" / "RECORD")
        assert report.references.files <= report.changed
        results.append((hashed, report))
    assert tree(tmp_path / "sealed") == tree(tmp_path / "unsealed")
    (sealed, sealed_report), (unsealed, unsealed_report) = results
    assert sealed.hash == unsealed.hash and sealed.sealed and sealed_report == unsealed_report
    return sealed, sealed_report


@pytest.mark.parametrize("case", CASES)
def test_the_hash_read_finds_and_replaces_every_reference(tmp_path: Path, case: str) -> None:
    venv = tmp_path / "venv"
    make_venv(venv, None)
    CASES[case](venv)
    _hashed, report = normalised(tmp_path, venv, host_strip)
    found = {f.name for f in report.references.files}
    assert found == {"none": set(), "near misses": set(), "text": {"__init__.py"},
                     "symlink": {"__init__.py", "data"},
                     "store path": {"__init__.py", "cc.txt"},
                     "large file": {"__init__.py", "blob.bin"}}[case]


@needs_toolchain
def test_an_extension_holding_the_build_path_is_fixed_and_its_build_id_redone(
        tmp_path: Path) -> None:
    """strip keeps __FILE__ in .rodata: found in the hash's read, replaced, and the build-id
    taken again over the final bytes, so two builds from different random sdist folders
    give one hash."""
    build_root = tmp_path / "vb"
    results = []
    for name in ("a", "b"):
        venv = tmp_path / name / "venv"
        make_venv(venv, build_root)
        results.append(normalised(tmp_path / name, venv, host_strip,
                                  build_root=os.fsencode(build_root) + b"/"))
    (first, report), (second, _) = results
    assert first.hash == second.hash
    so = SITE / "demo" / "_ext.cpython-314-x86_64-linux-gnu.so"
    assert so in report.references.files and so in report.changed
    assert os.fsencode(build_root) not in (tmp_path / "a" / "sealed" / so).read_bytes()


@pytest.mark.parametrize("split", range(1, len("/venvseal-build")))
def test_a_literal_split_across_two_pieces_is_seen(split: int) -> None:
    data = b"x" * 100 + b"/venvseal-build/src" + b"y" * 100
    cut = 100 + split
    spotter = Spotter((DEFAULT_BUILD_ROOT,))
    spotter.file(b"/v/a")
    spotter.piece(memoryview(data[:cut]))
    spotter.piece(memoryview(data[cut:]))
    spotter.file(b"/v/b")  # a new file starts clean: no tail carried over
    spotter.piece(memoryview(data[cut:]))
    assert spotter.files == {b"/v/a"}


def test_store_paths_are_spotted_in_link_targets() -> None:
    spotter = Spotter((DEFAULT_BUILD_ROOT,))
    spotter.link(b"/v/gcc", NIX_STORE_DIR + b"x")
    spotter.link(b"/v/lib", b"../lib64")
    assert spotter.files == {b"/v/gcc"}


HASH_AS_USER = """\
import sys
from pathlib import Path
from venvseal.deps.normalise import normalise_venv, hash_normalised
from venvseal.store.core import CANONICAL_MTIME

venv = Path(sys.argv[1])
report = normalise_venv(venv, strip=lambda files: set())
hashed, report = hash_normalised(venv, report, seal_mtime=CANONICAL_MTIME)
print(hashed.hash.sri, sorted(str(f) for f in report.references.files))
"""


def test_a_user_fixes_the_references_of_the_tree_the_walk_sealed(
        tmp_path: Path, unprivileged: User) -> None:
    """The walk seals the venv read-only; the fix-up reopens what it edits, as the owner."""
    venv = unprivileged.home / "venv"
    make_venv(venv, None)
    unprivileged.own(venv)
    done = unprivileged.python(HASH_AS_USER, venv)
    assert done.code == 0, done.err
    reference = tmp_path / "venv"
    make_venv(reference, None)
    expected, report = normalised(tmp_path, reference, host_strip)
    assert done.out.split()[0] == expected.hash.sri
    assert f"{SITE}/demo/__init__.py" in done.out
    assert [str(f) for f in report.references.files] == [f"{SITE}/demo/__init__.py"]
    assert (venv / SITE / "demo" / "__init__.py").stat().st_mode & 0o777 == 0o444  # sealed
