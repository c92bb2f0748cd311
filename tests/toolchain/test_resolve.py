"""venvseal.toolchain.resolve: a toolchain checked on the host before any sandbox starts."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from support import venvseal, write

from venvseal.errors import EXIT_USAGE
from venvseal.recipe.model import Toolchain
from venvseal.toolchain.resolve import ToolchainError, resolve

P = PurePosixPath


def executable(path: Path) -> None:
    write(path, "#!/bin/sh\n")
    path.chmod(0o755)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A prepared root with interpreters inside and outside what the sandbox mounts."""
    base = tmp_path / "root"
    executable(base / "usr/bin/python3.11")
    os.symlink("python3.11", base / "usr/bin/python3")
    executable(base / "root/.pyenv/versions/3.12.4/bin/python3.12")
    executable(base / "home/dev/venv/python")
    os.symlink("/home/dev/venv/python", base / "usr/bin/python-home")
    (base / "home/dev/lib").mkdir(parents=True)
    (base / "snap/bin").mkdir(parents=True)
    return base


def test_an_interpreter_the_sandbox_shows_resolves(root: Path) -> None:
    tc = resolve(Toolchain(root=root, python=P("/usr/bin/python3")))
    assert tc.python == P("/usr/bin/python3") and tc.root == root.resolve()


def test_folders_the_root_lacks_are_only_dead_entries(root: Path) -> None:
    tc = resolve(Toolchain(root=root, python=P("/usr/bin/python3"),
                           path=(P("/usr/bin"), P("/no/such/dir"), P("/venvseal-build/x")),
                           library_dirs=(P("/usr/lib"), P("/home/nobody/lib"))))
    assert P("/no/such/dir") in tc.path


# Each row: the toolchain table's values, and what the one error says.
OUTSIDE = [
    ("pyenv interpreter in root's home",
     {"python": P("/root/.pyenv/versions/3.12.4/bin/python3.12")},
     ["[toolchain] python /root/.pyenv/versions/3.12.4/bin/python3.12 is outside the folders",
      "install the interpreter under /usr or /opt"]),
    ("a /usr link to a home folder", {"python": P("/usr/bin/python-home")},
     ["[toolchain] python /usr/bin/python-home (it is /home/dev/venv/python) is outside"]),
    ("library dir in a home folder", {"library_dirs": (P("/usr/lib"), P("/home/dev/lib"))},
     ["[toolchain] library-dirs[1] /home/dev/lib is outside the folders the sandbox shows"]),
    ("path entry under /snap", {"path": (P("/snap/bin"),)},
     ["[toolchain] path[0] /snap/bin is outside", "/usr"]),
]


@pytest.mark.parametrize(("case", "values", "fragments"), OUTSIDE, ids=[r[0] for r in OUTSIDE])
def test_a_path_the_sandbox_would_not_show_is_refused_naming_the_key(
        root: Path, case: str, values: dict[str, object], fragments: list[str]) -> None:
    fields: dict[str, object] = {"root": root, "python": P("/usr/bin/python3"), **values}
    with pytest.raises(ToolchainError) as caught:
        resolve(Toolchain(**fields))  # type: ignore[arg-type]
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (case, message)
    assert "bwrap" not in message and caught.value.exit_code == EXIT_USAGE


def test_the_cli_says_it_in_one_line_and_exits_2(root: Path, tmp_path: Path) -> None:
    project = tmp_path / "app"
    write(project / "pyproject.toml", '[project]\nname = "app"\nversion = "1.0"\n')
    write(project / "venvseal.toml", f'[app]\nname = "app"\nversion = "1.0"\n[toolchain]\n'
          f'root = "{root}"\npython = "/root/.pyenv/versions/3.12.4/bin/python3.12"\n')
    run = venvseal("--store", tmp_path / "store", "toolchain", project)
    assert run.code == 2, run.err
    assert len(run.error.splitlines()) == 1 and "[toolchain] python" in run.error
