"""The closure's forest of links into the relinked deps: planting, unfolding, owning.

Each test lays out a miniature store in tmp_path: a sealed base path and a closure beside it,
so the relative links resolve as they do in a real store.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest
from support import write

from venvseal import fsutil
from venvseal.assemble.forest import Forest, ForestError

SITE = "lib/python3.11/site-packages"
BASE = "1" * 32 + "-app-deps-relinked"


def base_tree(store: Path) -> Path:
    base = store / BASE
    write(base / SITE / "pkg/__init__.py", "VALUE = 1\n")
    write(base / SITE / "pkg/mod.py", "X = 1\n")
    write(base / SITE / "pkg/__pycache__/mod.cpython-311.pyc", "old bytecode")
    write(base / SITE / "pkg/__pycache__/__init__.cpython-311.pyc", "init bytecode")
    write(base / SITE / "pkg/sub/data.txt", "data\n")
    write(base / SITE / "pkg-1.0.dist-info/RECORD", "pkg/__init__.py,,\n")
    write(base / "pyvenv.cfg", "home = @placeholder@\n")
    os.symlink("lib", base / "lib64")
    fsutil.seal_tree(base, mtime=1)
    return base


@pytest.fixture
def forest(tmp_path: Path) -> Forest:
    store = tmp_path / "store"
    base = base_tree(store)
    out = store / ("0" * 32 + "-app-1.0")
    out.mkdir()
    f = Forest(out, base)
    f.plant()
    return f


def unchanged(base: Path) -> bool:
    return fsutil.unsealed(base, mtime=1) == []


def test_plant_links_every_top_level_entry_relatively(forest: Forest) -> None:
    out = forest.out
    assert sorted(os.listdir(out)) == ["lib", "lib64", "pyvenv.cfg"]
    assert os.readlink(out / "lib") == f"../{BASE}/lib"
    assert os.readlink(out / "lib64") == "lib"  # the base's own symlink, copied
    assert (out / SITE / "pkg/__init__.py").read_text() == "VALUE = 1\n"
    assert (out / "lib64/python3.11/site-packages/pkg/mod.py").read_text() == "X = 1\n"


def test_own_file_copies_a_linked_file_and_unfolds_only_its_folders(forest: Forest) -> None:
    out, base = forest.out, forest.base
    edited = forest.own_file(out / SITE / "pkg/mod.py")
    edited.write_text("X = 2\n")
    assert not edited.is_symlink() and stat.S_IMODE(edited.stat().st_mode) & 0o200
    for folder in ("lib", "lib/python3.11", SITE, f"{SITE}/pkg"):
        assert (out / folder).is_dir() and not (out / folder).is_symlink(), folder
    # Siblings stay links, one level down each.
    assert os.readlink(out / SITE / "pkg/sub") == f"../../../../../{BASE}/{SITE}/pkg/sub"
    assert (out / SITE / "pkg/sub/data.txt").read_text() == "data\n"
    assert (out / SITE / "pkg-1.0.dist-info").is_symlink()
    assert (base / SITE / "pkg/mod.py").read_text() == "X = 1\n"
    assert unchanged(base)


def test_owning_a_module_drops_its_inherited_bytecode_only(forest: Forest) -> None:
    forest.own_file(forest.out / SITE / "pkg/mod.py")
    cache = forest.out / SITE / "pkg/__pycache__"
    assert cache.is_dir() and not cache.is_symlink()
    assert sorted(os.listdir(cache)) == ["__init__.cpython-311.pyc"]
    assert unchanged(forest.base)


def test_own_dir_creates_new_folders_inside_linked_ones(forest: Forest) -> None:
    made = forest.own_dir(forest.out / SITE / "pkg/sub/new")
    write(made / "x.py", "")
    assert not (forest.out / SITE / "pkg/sub").is_symlink()
    assert (forest.out / SITE / "pkg/sub/data.txt").is_symlink()
    assert not (forest.base / SITE / "pkg/sub/new").exists()
    assert unchanged(forest.base)


def test_paths_through_the_bases_own_symlinks_unfold_their_target(forest: Forest) -> None:
    path = forest.out / "lib64/python3.11/site-packages/pkg/mod.py"
    assert forest.relative(path) == PurePosixPath(SITE, "pkg/mod.py")
    forest.own_file(path).write_text("X = 3\n")
    assert (forest.out / "lib64").is_symlink()  # still the base's link to lib
    assert (forest.out / SITE / "pkg/mod.py").read_text() == "X = 3\n"
    assert unchanged(forest.base)


@pytest.mark.parametrize("rel", ["../elsewhere.py", f"{SITE}/../../../../x", "escape/x"])
def test_paths_leaving_the_closure_are_refused(forest: Forest, rel: str) -> None:
    os.symlink("/etc", forest.out / "escape")
    assert not forest.contains(forest.out / rel)
    with pytest.raises(ForestError, match="leads outside the closure"):
        forest.own_file(forest.out / rel)


def test_linked_entries_count_as_inside(forest: Forest) -> None:
    assert forest.contains(forest.out / SITE / "pkg/sub/data.txt")
    assert forest.is_link(PurePosixPath("lib"))
    assert not forest.is_link(PurePosixPath("lib64"))
