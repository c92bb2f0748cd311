"""venvseal.lock: recorded with --update-hash, read back to say why a declared hash broke."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from support import PYTHON, fixture_text, write
from support.apps import RECIPE

from venvseal.deps import pinlock
from venvseal.deps import stage as deps
from venvseal.hashes import Sha256, parse_sha256
from venvseal.recipe.files import load_recipe
from venvseal.store.core import StorePath
from venvseal.toolchain.resolve import ResolvedToolchain

LOCK = fixture_text("uvlock/pinlock.lock")

STATUS = """\
Package: libpq-dev
Status: install ok installed
Architecture: amd64
Version: {libpq}
Depends: libpq5

Package: libpq5
Status: install ok installed
Architecture: amd64
Version: {libpq}

Package: gcc-12
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14+deb12u1

Package: vim
Status: install ok installed
Architecture: amd64
Version: {vim}
"""
OLD, NEW = "15.18-0+deb12u1", "15.20-0+deb12u1"
VIM = "2:9.0.1378-2"


def sha(text: str) -> Sha256:
    return parse_sha256("sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest())
                        .decode())


DECLARED, GOT = sha("declared"), sha("got")


def make_project(tmp: Path) -> Path:
    project = tmp / "app"
    write(project / "venvseal.toml", RECIPE.format(name="demo", hash=DECLARED.sri))
    write(project / "pyproject.toml", '[project]\nname = "demo"\nversion = "0.1.0"\n')
    write(project / "uv.lock", LOCK)
    return project


def set_root(root: Path, *, libpq: str = OLD, vim: str = VIM) -> None:
    write(root / "var/lib/dpkg/status", STATUS.format(libpq=libpq, vim=vim))


def toolchain(root: Path, *, uv: str = "0.13.9") -> ResolvedToolchain:
    """A toolchain on ``root``, its identity the digest of its status file (as resolve's)."""
    identity = hashlib.sha256((root / "var/lib/dpkg/status").read_bytes()).hexdigest()
    return ResolvedToolchain(root=root, python=PurePosixPath(PYTHON), library_dirs=(),
                             path=(PurePosixPath("/usr/bin"),), identity=identity,
                             uv_version=uv)


def inputs(project: Path, root: Path, **kw: str) -> deps.DepsInputs:
    return deps.collect_inputs(load_recipe(project), toolchain(root, **kw))


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """A project whose venvseal.lock records DECLARED with libpq-dev OLD."""
    project, root = make_project(tmp_path), tmp_path / "root"
    set_root(root)
    assert pinlock.record(inputs(project, root), DECLARED) == project / "venvseal.lock"
    return project, root


def test_record_writes_the_lock_beside_the_recipe(recorded: tuple[Path, Path]) -> None:
    project, root = recorded
    text = (project / "venvseal.lock").read_text()
    assert f'"libpq-dev" = "{OLD}"' in text
    assert '"gcc-12" = "12.2.0-14+deb12u1"' in text
    assert '"vim"' not in text  # a host root records what builds read
    assert 'uv = "0.13.9"' in text
    assert f'hash = "{DECLARED.sri}"' in text
    assert "http" not in text  # no index host names
    pins = pinlock.read(project / "venvseal.lock")
    assert pins == pinlock.current(inputs(project, root), DECLARED)
    # Recording the same again writes nothing.
    assert pinlock.record(inputs(project, root), DECLARED) is None


def edit(rel: str, old: str, new: str) -> Callable[[Path, Path], dict[str, str]]:
    def change(project: Path, _root: Path) -> dict[str, str]:
        file = project / rel
        write(file, file.read_text().replace(old, new))
        return {}
    return change


def move_libpq(_project: Path, root: Path) -> dict[str, str]:
    set_root(root, libpq=NEW)
    return {}


def move_vim(_project: Path, root: Path) -> dict[str, str]:
    set_root(root, vim="2:9.1.0-1")
    return {}


def new_uv(_project: Path, _root: Path) -> dict[str, str]:
    return {"uv": "0.14.0"}


def nothing(_project: Path, _root: Path) -> dict[str, str]:
    return {}


# Each row: what moved, how, the lines the message must list, and whether that is toolchain
# drift (what --update-hash-on-drift re-declares the hash for).
MOVES = [
    ("libpq-dev upgraded", move_libpq,
     [f"libpq-dev {OLD} -> {NEW}", f"libpq5 {OLD} -> {NEW}"], True),
    ("uv upgraded", new_uv, ["uv 0.13.9 -> 0.14.0"], True),
    ("uv.lock edited", edit("uv.lock", "1.16.0", "1.17.0"), ["uv.lock changed"], False),
    ("pyproject.toml edited", edit("pyproject.toml", '"0.1.0"', '"0.2.0"'),
     ["pyproject.toml changed"], False),
    ("[deps] settings", edit("venvseal.toml", "[deps]\n", '[deps]\nexclude = ["six"]\n'),
     ["the recipe's [deps] settings"], False),
    ("unrecorded package", move_vim, ["the toolchain changed (identity"], False),
    ("nothing", nothing, ["every input", "is unchanged: the build is not reproducible",
                          "'venvseal check "], False),
]


@pytest.mark.parametrize(("case", "move", "lines", "is_drift"), MOVES,
                         ids=[row[0] for row in MOVES])
def test_mismatch_says_what_moved_and_how_to_accept_it(
        recorded: tuple[Path, Path], case: str, move: Callable[[Path, Path], dict[str, str]],
        lines: list[str], is_drift: bool) -> None:
    project, root = recorded
    now = inputs(project, root, **move(project, root))
    path = StorePath(Path("/store/abc-demo-deps"))
    message = str(pinlock.mismatch(now, path, DECLARED, GOT))
    first = message.splitlines()[0]
    assert first.startswith(f"{project / 'venvseal.toml'}: deps.hash: hash mismatch"), case
    assert f"specified: {DECLARED.sri}" in message and f"got:       {GOT.sri}" in message
    for line in lines:
        assert line in message, f"{case}: {line!r} not in\n{message}"
    assert f"'venvseal deps --update-hash {project}'" in message
    assert f"'venvseal build --update-hash {project}'" in message
    assert "rewrites deps.hash and venvseal.lock" in message
    assert bool(pinlock.drift(now)) is is_drift, case
    if case != "nothing":
        assert "what changed since deps.hash was declared" in message


def test_mismatch_without_a_lock_says_so(tmp_path: Path) -> None:
    project, root = make_project(tmp_path), tmp_path / "root"
    set_root(root)
    message = str(pinlock.mismatch(inputs(project, root), StorePath(Path("/s/a-demo-deps")),
                                   DECLARED, GOT))
    assert "no venvseal.lock beside the recipe records what deps.hash was declared" in message
    assert pinlock.drift(inputs(project, root)) == ()


def test_many_changes_are_counted(recorded: tuple[Path, Path]) -> None:
    project, root = recorded
    text = "".join(STATUS.format(libpq=OLD, vim=VIM).replace("libpq-dev", f"x{i}-dev")
                   .split("\n\n")[0] + "\n\n" for i in range(40))
    write(root / "var/lib/dpkg/status", text)
    now = inputs(project, root)
    message = str(pinlock.mismatch(now, StorePath(Path("/s/a-demo-deps")), DECLARED, GOT))
    assert "x0-dev 15.18-0+deb12u1 installed" in message
    assert "and 19 more" in message  # 40 installed, libpq5, libpq-dev, gcc-12 removed: 43 lines


@pytest.mark.parametrize("text", ["version = 1\n[deps]\nhash = 'x'\n", "not toml ["])
def test_an_unreadable_lock_is_a_usage_error(tmp_path: Path, text: str) -> None:
    write(tmp_path / "venvseal.lock", text)
    with pytest.raises(pinlock.PinLockError, match="--update-hash") as info:
        pinlock.read(tmp_path / "venvseal.lock")
    assert info.value.exit_code == 2
    assert str(tmp_path / "venvseal.lock") in str(info.value)


def test_a_lock_of_another_format_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "venvseal.lock", "version = 99\n")
    assert pinlock.read(tmp_path / "venvseal.lock") is None


def test_render_reads_back(recorded: tuple[Path, Path]) -> None:
    project, _root = recorded
    pins = pinlock.read(project / "venvseal.lock")
    assert pins is not None
    odd = dataclasses.replace(pins, packages={'we"ird\\name': "1:2.0~rc1"})
    write(project / "x.lock", pinlock.render(odd, "deps.hash"))
    assert pinlock.read(project / "x.lock") == odd


def test_a_damaged_lock_is_replaced_by_update_hash_and_the_mismatch_still_shown(
        recorded: tuple[Path, Path]) -> None:
    project, root = recorded
    write(project / "venvseal.lock", "not toml [")
    message = str(pinlock.mismatch(inputs(project, root), StorePath(Path("/s/a-demo-deps")),
                                   DECLARED, GOT))
    assert f"specified: {DECLARED.sri}" in message and "no venvseal.lock" in message
    assert pinlock.record(inputs(project, root), GOT) == project / "venvseal.lock"
    pins = pinlock.read(project / "venvseal.lock")
    assert pins is not None and pins.hash == GOT.sri
