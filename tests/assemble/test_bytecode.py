"""Bytecode on every core: the relinked deps' compiler, run in the sandbox with forked
workers, writes the same pyc bytes as one process does, on a real tree of installed
packages (this interpreter's own: rich, pygments, tomlkit, pytest)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path, PurePosixPath

import pytest

from venvseal.assemble.relinked import compile_bytecode
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec, fixed_env

PACKAGES = ("rich", "pygments", "tomlkit", "_pytest")
PYTHON = PurePosixPath("/usr/bin/python3")  # the host root's (the sandbox shows no /work)
LOGICAL = PurePosixPath("/venvseal/store/" + "1" * 32 + "-site")


def real_tree(dest: Path) -> Path:
    """Copies of installed packages, without their bytecode."""
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        shutil.copytree(Path(spec.origin).parent, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "broken.py").write_text("def f(:\n")  # counted as not Python, not compiled
    return dest


def compile_in_sandbox(tree: Path, jobs: int) -> tuple[int, int]:
    """Compile ``tree`` seen at LOGICAL (the pycs name that path) with ``jobs`` workers."""
    spec = SandboxSpec(root=Path("/"), env=fixed_env((PurePosixPath("/usr/bin"),)),
                       mounts=(Mount(host=tree, target=LOGICAL, writable=True),))
    return compile_bytecode([LOGICAL], python=PYTHON, what="test",
                            runner=Sandbox.locate(), spec=spec, jobs=jobs)


def pycs(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.pyc"))}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[int, int], dict[str, str]]:
    tree = real_tree(tmp_path_factory.mktemp("one") / "site")
    counts = compile_in_sandbox(tree, jobs=1)
    return counts, pycs(tree)


@pytest.mark.parametrize("jobs", [2, 5])
def test_parallel_bytecode_is_byte_identical_to_one_process(
        tmp_path: Path, sequential: tuple[tuple[int, int], dict[str, str]], jobs: int) -> None:
    (compiled, failed), expected = sequential
    assert compiled > 300 and failed == 1
    assert len(expected) == compiled
    tree = real_tree(tmp_path / "site")
    assert compile_in_sandbox(tree, jobs=jobs) == (compiled, failed)
    assert pycs(tree) == expected


def test_a_few_files_compile_in_one_process(tmp_path: Path) -> None:
    tree = tmp_path / "site"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg/__init__.py").write_text("VALUE = 1\n")
    assert compile_in_sandbox(tree, jobs=8) == (1, 0)
    assert list(pycs(tree)) == [f"pkg/__pycache__/__init__.{sys.implementation.cache_tag}.pyc"]
