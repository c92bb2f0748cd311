"""The app's own files: the digests that key the assembly stage and the copies it makes."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from support import write

from venvseal.assemble.sources import SourceError, copy_tree, inside, tree_digest


def make_tree(root: Path) -> Path:
    write(root / "app" / "__init__.py", "")
    write(root / "app" / "views.py", "def index():\n    return 'hi'\n")
    write(root / "app" / "static" / "site.css", "body {}\n")
    tool = write(root / "bin" / "tool", "#!/bin/sh\necho tool\n")
    os.chmod(tool, 0o755)
    (root / "app" / "current.css").symlink_to("static/site.css")
    return root


def edit(rel: str, text: str) -> Callable[[Path], object]:
    return lambda root: write(root / rel, text)


def chmod(rel: str, mode: int) -> Callable[[Path], None]:
    return lambda root: os.chmod(root / rel, mode)


def relink(rel: str, target: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / rel).unlink()
        (root / rel).symlink_to(target)
    return change


# tree_digest ---------------------------------------------------------------------------------


def test_digest_is_stable_and_independent_of_location_and_mtimes(tmp_path: Path) -> None:
    here = make_tree(tmp_path / "here")
    first = tree_digest(here)
    assert first == tree_digest(here)
    there = tmp_path / "elsewhere" / "there"
    shutil.copytree(here, there, symlinks=True)
    os.utime(there / "app" / "views.py", (1, 1))
    assert tree_digest(there) == first
    assert len(first) == 64


CHANGES = [
    ("content", edit("app/views.py", "def index():\n    return 'ho'\n")),
    ("executable bit set", chmod("app/views.py", 0o755)),
    ("executable bit cleared", chmod("bin/tool", 0o644)),
    ("new file", edit("app/extra.py", "")),
    ("new empty file in a new folder", edit("app/sub/__init__.py", "")),
    ("symlink target", relink("app/current.css", "static/other.css")),
    ("file renamed", lambda root: os.rename(root / "app/views.py", root / "app/view.py")),
    ("file removed", lambda root: (root / "app/static/site.css").unlink()),
]


@pytest.mark.parametrize(("case", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_digest_changes_with_what_a_copy_would_change(
        tmp_path: Path, case: str, change: Callable[[Path], object]) -> None:
    root = make_tree(tmp_path / "src")
    before = tree_digest(root)
    change(root)
    assert tree_digest(root) != before, case


IGNORED = [
    ("__pycache__", edit("app/__pycache__/views.cpython-311.pyc", "bytecode")),
    ("*.pyc next to the source", edit("app/views.pyc", "bytecode")),
    (".git", edit(".git/HEAD", "ref: refs/heads/main\n")),
    (".venv", edit(".venv/pyvenv.cfg", "home = /usr/bin\n")),
    ("egg-info", edit("app.egg-info/PKG-INFO", "Name: app\n")),
    ("read permission for others", chmod("app/views.py", 0o600)),
]


@pytest.mark.parametrize(("case", "change"), IGNORED, ids=[c[0] for c in IGNORED])
def test_digest_ignores_what_is_never_copied(tmp_path: Path, case: str,
                                             change: Callable[[Path], object]) -> None:
    root = make_tree(tmp_path / "src")
    before = tree_digest(root)
    change(root)
    assert tree_digest(root) == before, case


def test_digest_ignores_cargo_output_beside_cargo_toml_only(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    write(root / "rust" / "Cargo.toml", "[package]\nname = 'rusty'\n")
    before = tree_digest(root)
    write(root / "rust" / "target" / "release" / "librusty.so", "a local cargo build")
    assert tree_digest(root) == before
    # Anywhere else, a folder called target is source like any other.
    write(root / "app" / "target" / "__init__.py", "")
    assert tree_digest(root) != before


def test_digest_honours_excludes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    before = tree_digest(root, ["static"])
    write(root / "app" / "static" / "more.css", "p {}\n")
    assert tree_digest(root, ["static"]) == before
    assert tree_digest(root) != tree_digest(root, ["static"])


def test_digest_of_a_single_file(tmp_path: Path) -> None:
    file = write(tmp_path / "manage.py", "print(1)\n")
    first = tree_digest(file)
    write(file, "print(2)\n")
    assert tree_digest(file) != first


def test_digest_refuses_a_fifo(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    os.mkfifo(root / "app" / "pipe")
    with pytest.raises(SourceError, match="not a file, directory or symlink"):
        tree_digest(root)


# inside --------------------------------------------------------------------------------------


def test_inside_returns_the_path_within_base(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project")
    assert inside(root, "app/views.py", what="assemble.copy[0].from") == root / "app/views.py"
    assert inside(root, ".", what="x") == root
    # A symlink that stays inside the project is fine.
    assert inside(root, "app/current.css", what="x") == root / "app/current.css"


@pytest.mark.parametrize("rel", ["..", "../secret", "app/../../secret", "/etc/passwd",
                                 "//etc", "app/../../project-other"])
def test_inside_refuses_paths_that_leave_base(tmp_path: Path, rel: str) -> None:
    root = make_tree(tmp_path / "project")
    write(tmp_path / "secret", "s\n")
    write(tmp_path / "project-other" / "x", "")
    with pytest.raises(SourceError) as info:
        inside(root, rel, what="assemble.copy[2].from")
    message = str(info.value)
    assert message.startswith(f"assemble.copy[2].from: {rel} leads outside {root}")
    assert "copy only files inside the project" in message


@pytest.mark.parametrize("target", ["outside", "../outside", "/etc"])
def test_inside_refuses_a_symlink_leading_out(tmp_path: Path, target: str) -> None:
    root = make_tree(tmp_path / "project")
    (tmp_path / "outside").mkdir()
    (root / "data").symlink_to(tmp_path / target if target == "outside" else target)
    for rel in ("data", "data/file"):
        with pytest.raises(SourceError, match="leads outside"):
            inside(root, rel, what="assemble.copy[0].from")


def test_inside_names_a_missing_path(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "project")
    with pytest.raises(SourceError, match=r"^member x: web/dist does not exist in .*fix the path"):
        inside(root, "web/dist", what="member x")


# copy_tree -----------------------------------------------------------------------------------


def listing(root: Path) -> dict[str, str]:
    """Every entry below ``root``: its kind, mode (files) or target (symlinks)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = oct(stat.S_IMODE(path.stat().st_mode))
    return out


def test_copy_tree_copies_files_modes_and_links(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    os.chmod(root / "app" / "views.py", 0o600)  # copies get canonical modes
    dest = tmp_path / "out" / "site"
    written = copy_tree(root, dest, within=root)
    assert listing(dest) == {
        "app": "dir", "app/__init__.py": "0o644", "app/current.css": "-> static/site.css",
        "app/static": "dir", "app/static/site.css": "0o644", "app/views.py": "0o644",
        "bin": "dir", "bin/tool": "0o755",
    }
    assert sorted(p.relative_to(dest).as_posix() for p in written) == [
        "app/__init__.py", "app/static/site.css", "app/views.py", "bin/tool"]
    assert (dest / "app/views.py").read_bytes() == (root / "app/views.py").read_bytes()


def test_copy_tree_of_a_single_file(tmp_path: Path) -> None:
    file = write(tmp_path / "manage.py", "print(1)\n")
    dest = tmp_path / "out" / "app" / "manage.py"
    assert copy_tree(file, dest) == [dest]
    assert dest.read_text() == "print(1)\n"


def test_copy_tree_applies_excludes_and_the_ignore_rules(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    write(root / "app" / "__pycache__" / "views.cpython-311.pyc", "x")
    write(root / "app" / "tests" / "test_views.py", "")
    write(root / ".git" / "HEAD", "x")
    write(root / "app" / "notes.txt", "")
    dest = tmp_path / "out"
    copy_tree(root, dest, ["tests", "*.txt"])
    names = set(listing(dest))
    assert "app/views.py" in names
    assert not {n for n in names if "__pycache__" in n or "tests" in n or n.startswith(".git")
                or n.endswith(".txt")}


def test_copy_tree_leaves_out_cargo_output(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    write(root / "Cargo.toml", "[package]\nname = 'rusty'\n")
    write(root / "target" / "release" / "librusty.so", "a local cargo build")
    write(root / "app" / "target" / "__init__.py", "")
    copy_tree(root, tmp_path / "out")
    names = set(listing(tmp_path / "out"))
    assert "Cargo.toml" in names and "app/target/__init__.py" in names
    assert not {n for n in names if n.startswith("target")}


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_copy_tree_refuses_a_symlink_out_of_within(tmp_path: Path, target: str) -> None:
    root = make_tree(tmp_path / "project")
    secret = write(tmp_path / "secret.txt", "s\n")
    link = root / "app" / "static" / "leak.txt"
    link.symlink_to(secret if target == "absolute" else "../../../secret.txt")
    with pytest.raises(SourceError) as info:
        copy_tree(root / "app", tmp_path / "out", within=root)
    assert str(info.value).startswith(f"{link}: symlink to ")
    assert f"leads outside {root}" in str(info.value)
    assert not (tmp_path / "out" / "static" / "leak.txt").exists()


def test_copy_tree_never_writes_through_a_hard_link(tmp_path: Path) -> None:
    # The closure's files are hard links into the sealed deps store path; a copy rule whose
    # destination exists must replace the closure's link, not the store's file (root can
    # write a read-only file, so the mode alone does not protect it).
    root = make_tree(tmp_path / "src")
    sealed = write(tmp_path / "store" / "views.py", "sealed\n")
    os.chmod(sealed, 0o444)
    dest = tmp_path / "out"
    (dest / "app").mkdir(parents=True)
    os.link(sealed, dest / "app" / "views.py")
    (dest / "app" / "current.css").symlink_to("elsewhere.css")
    copy_tree(root, dest)
    assert sealed.read_text() == "sealed\n"
    assert (dest / "app" / "views.py").read_bytes() == (root / "app" / "views.py").read_bytes()
    assert os.readlink(dest / "app" / "current.css") == "static/site.css"
