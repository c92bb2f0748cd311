"""operations: the binds a run of a closure can mount."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from venvseal.operations import Bind, on_path, unmountable_bind
from venvseal.store.core import STORE_DIR
from venvseal.toolchain.resolve import ResolvedToolchain

CLOSURE = "1" * 32 + "-site-1.0"


# Each row: the bind's target (under the store, or not), whether the host side is a folder,
# and whether bubblewrap could mount it (the store is read-only: no mount point is made).
ROWS = [
    (STORE_DIR / CLOSURE / "app" / "data", True, False),   # the closure has no app/data
    (STORE_DIR / CLOSURE / "app", True, True),
    (STORE_DIR / CLOSURE / "app" / "settings.py", False, True),
    (STORE_DIR / CLOSURE / "app" / "settings.py", True, False),  # a folder on a file
    (STORE_DIR / ("2" * 32 + "-other"), True, False),
    (PurePosixPath("/data"), True, True),                  # outside the store: bwrap makes it
]


@pytest.mark.parametrize(("target", "folder", "mountable"), ROWS)
def test_a_bind_into_the_store_needs_a_mount_point_the_closure_has(
        tmp_path: Path, target: PurePosixPath, folder: bool, mountable: bool) -> None:
    store = tmp_path / "store"
    (store / CLOSURE / "app").mkdir(parents=True)
    (store / CLOSURE / "app" / "settings.py").write_text("")
    host = tmp_path / ("data" if folder else "file")
    host.mkdir() if folder else host.write_text("")
    bind = Bind(host=host, target=target)
    assert (unmountable_bind((bind,), store) is None) is mountable


# Each row: the program a run names, and whether the sandbox's PATH finds it (the closure's
# bin/ first, then the toolchain's PATH inside its root, through the root's own symlinks).
PROGRAMS = [
    ("myapp", True),        # a console script of the closure
    ("python", True),       # a link into the toolchain, counted unresolved
    ("sh", True),           # the toolchain's /bin/sh, through its bin -> usr/bin link
    ("uwsgi", False),       # nowhere
    ("notes.txt", False),   # in the toolchain's usr/bin, but not executable
    ("share", False),       # a folder, not a program
]


@pytest.mark.parametrize(("program", "found"), PROGRAMS)
def test_a_run_finds_programs_where_the_sandbox_path_does(
        tmp_path: Path, program: str, found: bool) -> None:
    closure = tmp_path / "store" / CLOSURE
    (closure / "bin").mkdir(parents=True)
    (closure / "bin" / "myapp").write_text("#!/bin/sh\n")
    (closure / "bin" / "python").symlink_to("/usr/bin/python3.99")
    root = tmp_path / "root"
    (root / "usr" / "bin" / "share").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "usr" / "bin" / "sh").write_text("")
    (root / "usr" / "bin" / "sh").chmod(0o755)
    (root / "usr" / "bin" / "notes.txt").write_text("")
    tc = ResolvedToolchain(root=root, python=PurePosixPath("/usr/bin/python3"),
                           library_dirs=(), path=(PurePosixPath("/bin"),), identity="x",
                           uv_version="0")
    assert on_path(program, closure, tc) is found
