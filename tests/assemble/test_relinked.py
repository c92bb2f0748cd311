"""The relinked deps stage: its key, and the bytecode compiler it runs in the sandbox.

The stage as a whole runs in every build test (test_build_e2e.py, test_authentik_e2e.py);
here the compiler script runs with this interpreter on a small tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

from support import write

from venvseal.assemble.relinked import COMPILER, RelinkInputs
from venvseal.elf.tool import locate_patchelf, patchelf_version
from venvseal.store.core import StorePath
from venvseal.toolchain.resolve import ResolvedToolchain


def compile_tree(root: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-I", "-c", COMPILER, str(root)], check=True,
                          capture_output=True, text=True, env={"PYTHONHASHSEED": "0"})
    compiled, failed = done.stdout.split()
    return int(compiled), int(failed)


def tree(root: Path) -> Path:
    write(root / "pkg/__init__.py", "from .mod import VALUE\n")
    write(root / "pkg/mod.py", "VALUE = {'a': (1, 2.5, 'x' * 3)}\nSEEN = frozenset('abc')\n")
    write(root / "pkg/templates/page.py", "{% if x %}not python{% endif %}\n")
    os.symlink("mod.py", root / "pkg/alias.py")  # a link (as forest.py makes): not compiled
    (root / "linked").symlink_to(root / "pkg", target_is_directory=True)
    return root


def pycs(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.pyc"))}


def test_compiles_real_modules_only_and_counts_the_rest(tmp_path: Path) -> None:
    root = tree(tmp_path / "site")
    assert compile_tree(root) == (2, 1)
    tag = sys.implementation.cache_tag
    assert sorted(pycs(root)) == [f"pkg/__pycache__/__init__.{tag}.pyc",
                                  f"pkg/__pycache__/mod.{tag}.pyc"]


def test_bytecode_is_checked_hash_and_the_same_from_two_runs(tmp_path: Path) -> None:
    # The same path both times, as the stage compiles at the store path's logical path
    # (the source's path is in the bytecode).
    first = tree(tmp_path / "site")
    compile_tree(first)
    before = pycs(first)
    for pyc in first.rglob("*.pyc"):
        pyc.unlink()
    compile_tree(first)
    assert pycs(first) == before
    pyc = first / "pkg/__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b11  # PEP 552: hash-based, checked against the source on import


def test_key_follows_every_input(tmp_path: Path) -> None:
    tc = ResolvedToolchain(root=Path("/"), python=Path("/usr/bin/python3"),  # type: ignore[arg-type]
                           library_dirs=(), path=(), identity="host:1", uv_version="0.13.9")
    base = RelinkInputs(deps=StorePath(tmp_path / ("1" * 32 + "-a-deps")), toolchain=tc,
                        ignore_missing=())
    variants = [
        dataclasses.replace(base, deps=StorePath(tmp_path / ("2" * 32 + "-a-deps"))),
        dataclasses.replace(base, toolchain=dataclasses.replace(tc, identity="host:2")),
        dataclasses.replace(base, ignore_missing=("libfoo.so.1",)),
        # Two patchelf releases relink one file into other bytes (0.14.3 and 0.19.3 did).
        dataclasses.replace(base, patchelf="0.14.3" if base.patchelf != "0.14.3" else "0.19.3"),
    ]
    keys = {base.fingerprint(), *(v.fingerprint() for v in variants)}
    assert len(keys) == 5


def test_the_key_names_the_patchelf_that_relinks() -> None:
    found = locate_patchelf()
    printed = subprocess.run([found, "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", patchelf_version())
    assert patchelf_version() in printed


def test_the_relinked_deps_share_no_inode_with_the_deps_path(tmp_path: Path) -> None:
    # Issue 13.8: `chmod -R u+w` and an edit on one (as a repair does) must not reach the
    # other, which the hard links of before did.
    from venvseal import fsutil
    from venvseal.assemble.relinked import make
    from venvseal.deps.stage import BUILD_ENV
    from venvseal.recipe.model import DEFAULT_LIBRARY_DIRS, DEFAULT_PATH
    from venvseal.toolchain.sandbox import Sandbox

    deps = tmp_path / ("1" * 32 + "-app-deps")
    site = "lib/python3.11/site-packages"
    write(deps / site / "pkg/__init__.py", "VALUE = 1\n")
    write(deps / site / "pkg/data.txt", "data\n")
    write(deps / BUILD_ENV / "flit_core/__init__.py", "")
    write(deps / "pyvenv.cfg", "version_info = 3.11.2\n")
    os.symlink("lib", deps / "lib64")
    fsutil.seal_tree(deps, mtime=1)
    tc = ResolvedToolchain(root=Path("/"), python=PurePosixPath("/usr/bin/python3.11"),
                           library_dirs=DEFAULT_LIBRARY_DIRS, path=DEFAULT_PATH,
                           identity="host:1", uv_version="0.13.9")
    out = tmp_path / ("2" * 32 + "-app-deps-relinked")
    made = make(RelinkInputs(deps=StorePath(deps), toolchain=tc, ignore_missing=()), out,
                logical=PurePosixPath("/venvseal/store") / out.name, runner=Sandbox.locate())
    assert made.compiled == 1
    inodes = {(p.lstat().st_dev, p.lstat().st_ino) for p in deps.rglob("*")}
    copied = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    assert {p.relative_to(out).as_posix() for p in copied} >= {
        f"{site}/pkg/__init__.py", f"{site}/pkg/data.txt", "pyvenv.cfg"}
    assert not (out / BUILD_ENV).exists()
    assert os.readlink(out / "lib64") == "lib"
    assert all((p.lstat().st_dev, p.lstat().st_ino) not in inodes for p in copied)
    fsutil.make_tree_writable(out)
    for p in copied:
        p.chmod(0o644)
    (out / site / "pkg/data.txt").write_text("repaired\n")
    assert (deps / site / "pkg/data.txt").read_text() == "data\n"
    assert fsutil.unsealed(deps, mtime=1) == []
