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


# A hostile relinked deps path (issue 13.1): links inside it lead to a decoy host folder. No
# edit of the closure may write, chmod or delete anything there, nor in the base.

def decoy(tmp_path: Path) -> Path:
    host = tmp_path / "host"
    write(host / "__init__.py", "HOST = 1\n")
    write(host / "x.py", "HOST = 2\n")
    os.chmod(host / "__init__.py", 0o600)
    return host


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under ``root`` with its mode and content (or link target)."""
    state: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content: bytes | str = (os.readlink(path) if path.is_symlink() else
                                path.read_bytes() if path.is_file() else b"")
        state[path.relative_to(root).as_posix()] = (st.st_mode, content)
    return state


# (case, base-relative symlinks -> targets ("{host}" is the decoy folder), file edited)
HOSTILE = [
    ("folder link to an absolute host path",
     {"django/__init__.py": "../djx/__init__.py", "djx": "{host}"}, "django/__init__.py"),
    ("folder link climbing out of the store",
     {"django/__init__.py": "../djx/__init__.py", "djx": "../../../../../host"},
     "django/__init__.py"),
    ("file link to an absolute host file", {"django/__init__.py": "{host}/__init__.py"},
     "django/__init__.py"),
    ("a chain of links, the last one out",
     {"django/__init__.py": "../a/x.py", "a": "b", "b": "{host}"}, "django/__init__.py"),
    ("a link in a folder on the way",
     {"django/utils": "../djx", "djx": "{host}"}, "django/utils/x.py"),
]


@pytest.mark.parametrize(("links", "edited"), [row[1:] for row in HOSTILE],
                         ids=[row[0] for row in HOSTILE])
def test_links_out_of_the_closure_are_refused_and_nothing_outside_changes(
        tmp_path: Path, links: dict[str, str], edited: str) -> None:
    from venvseal.assemble.textedit import SubstituteError, apply_all
    from venvseal.recipe.model import Recipe, Substitute

    host = decoy(tmp_path)
    store = tmp_path / "store"
    base = store / BASE
    write(base / SITE / "django/apps.py", "APPS = 1\n")
    for rel, target in links.items():
        (base / SITE / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target.format(host=host), base / SITE / rel)
    fsutil.seal_tree(base, mtime=1)
    out = store / ("0" * 32 + "-app-1.0")
    out.mkdir()
    forest = Forest(out, base)
    forest.plant()
    before = snapshot(host)
    path = out / SITE / edited
    assert not forest.contains(path)
    with pytest.raises(ForestError, match="leads outside the closure"):
        forest.own_file(path)
    with pytest.raises(ForestError, match="leads outside the closure"):
        forest.own_dir(path / "new")
    sub = Substitute(kind="text", file=f"@site-packages@/{edited}", replace="HOST",
                     with_="PWNED")
    rec = Recipe(file=tmp_path / "venvseal.toml", base=tmp_path, key_prefix="",
                 app=None, substitute=(sub,))  # type: ignore[arg-type]
    with pytest.raises(SubstituteError, match="leads outside the closure"):
        apply_all(rec, out, {}, SITE, closure=forest)
    assert snapshot(host) == before
    assert unchanged(base)


def test_a_link_chain_inside_the_closure_is_edited_in_the_closure(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = store / BASE
    write(base / SITE / "djx/__init__.py", "REAL = 1\n")
    (base / SITE / "django").mkdir(parents=True)
    os.symlink("../djx/__init__.py", base / SITE / "django/__init__.py")
    fsutil.seal_tree(base, mtime=1)
    out = store / ("0" * 32 + "-app-1.0")
    out.mkdir()
    forest = Forest(out, base)
    forest.plant()
    owned = forest.own_file(out / SITE / "django/__init__.py")
    assert owned == out / SITE / "djx/__init__.py"
    owned.write_text("REAL = 2\n")
    # The link itself became the closure's own, so it resolves to the closure's copy.
    assert (out / SITE / "django/__init__.py").read_text() == "REAL = 2\n"
    assert (base / SITE / "django/__init__.py").read_text() == "REAL = 1\n"
    assert unchanged(base)


def test_copy_over_follows_no_symlink(tmp_path: Path) -> None:
    host = decoy(tmp_path)
    before = snapshot(host)
    work = tmp_path / "work"
    write(work / "real.py", "REAL\n")
    os.symlink(host / "__init__.py", work / "link.py")
    os.symlink(host, work / "linkdir")
    with pytest.raises(OSError):
        fsutil.copy_over(work / "link.py", work / "copy.py")  # the source is a link
    with pytest.raises(OSError):
        fsutil.copy_over(work / "real.py", work / "linkdir" / "x.py")  # its folder is a link
    fsutil.copy_over(work / "real.py", work / "link.py", writable=True)  # replaces the link
    assert not (work / "link.py").is_symlink()
    assert (work / "link.py").read_text() == "REAL\n"
    assert snapshot(host) == before
    assert sorted(os.listdir(work)) == ["link.py", "linkdir", "real.py"]


def test_sealing_never_changes_what_a_link_points_to(tmp_path: Path) -> None:
    host = decoy(tmp_path)
    before = snapshot(host)
    tree = tmp_path / "tree"
    write(tree / "a.py", "")
    os.symlink(host / "__init__.py", tree / "file-link")
    os.symlink(host, tree / "dir-link")
    fsutil.seal_tree(tree, mtime=1)
    assert snapshot(host) == before
    assert stat.S_IMODE((tree / "a.py").lstat().st_mode) == fsutil.SEALED_FILE


def test_a_symlink_loop_is_an_error_not_a_hang(forest: Forest) -> None:
    os.symlink("b", forest.out / "a")
    os.symlink("a", forest.out / "b")
    with pytest.raises(ForestError, match="too many levels of symlinks"):
        forest.own_file(forest.out / "a" / "x.py")
