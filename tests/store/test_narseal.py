"""Sealing in the NAR walk (``nar_hash(..., seal_mtime=...)``) against ``fsutil.seal_tree``.

The one-walk seal must leave exactly what seal_tree followed by a hash leaves: the same
hash, and every entry with the same mode and times; hard links handled alike.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from pathlib import Path

from support.trees import random_tree, write
from support.unprivileged import User

from venvseal import fsutil
from venvseal.store.nar import nar_hash

MTIME = 1


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(kind, mode, mtime) of every entry, by path relative to ``root``."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            rel = os.path.normpath(os.path.relpath(path, root))
            found[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode) if not
                          stat.S_ISLNK(st.st_mode) else 0, st.st_mtime_ns)
    return found


def twin_trees(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    first = tmp_path / f"a{seed}"
    random_tree(rng, os.fsencode(first))
    second = tmp_path / f"b{seed}"
    shutil.copytree(first, second, symlinks=True)
    return first, second


def test_sealing_walk_leaves_what_seal_tree_leaves(tmp_path: Path) -> None:
    for seed in range(12):
        classic, walked = twin_trees(tmp_path, seed)
        fsutil.seal_tree(classic, mtime=MTIME)
        expected = nar_hash(classic)
        got = nar_hash(walked, seal_mtime=MTIME)
        assert got.hash == expected.hash and got.size == expected.size, seed
        assert got.sealed and not expected.sealed
        # The top folder stays writable (the store renames it into place, then seals it).
        assert stat.S_IMODE(os.lstat(walked).st_mode) == fsutil.SEALED_DIR | stat.S_IWUSR
        os.chmod(walked, fsutil.SEALED_DIR)
        assert snapshot(walked) == snapshot(classic), seed
        assert fsutil.unsealed(walked, mtime=MTIME) == []


def test_single_file_and_symlink_roots_are_sealed(tmp_path: Path) -> None:
    write(tmp_path / "file", b"x", 0o755)
    os.symlink("file", tmp_path / "link")
    assert nar_hash(tmp_path / "file", seal_mtime=MTIME).hash == nar_hash(tmp_path / "file").hash
    nar_hash(tmp_path / "link", seal_mtime=MTIME)
    assert stat.S_IMODE(os.lstat(tmp_path / "file").st_mode) == fsutil.SEALED_EXECUTABLE
    assert os.lstat(tmp_path / "link").st_mtime_ns == MTIME * 10**9


def test_shared_files_are_copied_and_sealed_ones_kept_shared(tmp_path: Path) -> None:
    """A file hard-linked from outside (uv's cache) is sealed as a copy, the outside one
    untouched; one already sealed (a hard link into another store path) stays shared."""
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tmp_path / "cache-file", b"from the cache", 0o644)
    os.link(tmp_path / "cache-file", tree / "linked")
    write(tmp_path / "sealed-file", b"from a store path", fsutil.SEALED_FILE)
    os.utime(tmp_path / "sealed-file", ns=(MTIME * 10**9,) * 2)
    os.link(tmp_path / "sealed-file", tree / "shared")
    before = os.stat(tmp_path / "cache-file")

    result = nar_hash(tree, seal_mtime=MTIME)

    outside = os.stat(tmp_path / "cache-file")
    assert (outside.st_mode, outside.st_mtime_ns, outside.st_nlink) == (
        before.st_mode, before.st_mtime_ns, 1)
    assert (tree / "linked").read_bytes() == b"from the cache"
    assert stat.S_IMODE(os.stat(tree / "linked").st_mode) == fsutil.SEALED_FILE
    assert os.stat(tree / "shared").st_ino == os.stat(tmp_path / "sealed-file").st_ino
    assert fsutil.unsealed(tree, mtime=MTIME) == []
    assert result.hash == nar_hash(tree).hash


SEAL_UNREADABLE = """
import os, sys
from venvseal import fsutil
from venvseal.store.nar import nar_hash
root = sys.argv[1]
os.chmod(os.path.join(root, "sub", "secret"), 0)
os.chmod(os.path.join(root, "sub"), 0)
print(nar_hash(root, seal_mtime=1).hash.base16)
print(fsutil.unsealed(__import__("pathlib").Path(root), mtime=1))
"""


def test_unreadable_entries_are_opened_up_as_seal_tree_does(unprivileged: User) -> None:
    """Not as root (root reads anything): a folder and a file the owner may not read are
    sealed (seal_tree's way) and hashed, as a separate seal then hash did."""
    root = unprivileged.home / "unreadable"
    (root / "sub").mkdir(parents=True)
    write(root / "sub" / "secret", b"hidden", 0o644)
    write(root / "top", b"top", 0o600)
    expected = nar_hash(root).hash.base16
    unprivileged.own(root)
    done = unprivileged.python(SEAL_UNREADABLE, root)
    assert done.code == 0, done.err
    assert done.out.split("\n")[:2] == [expected, "[]"]
