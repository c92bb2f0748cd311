"""The fixed-output realiser (the deps stage's and [[fetch]]'s): declared, undeclared, wrong."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from venvseal.errors import VenvsealError
from venvseal.hashes import Sha256
from venvseal.store.core import HashMismatchError, Store
from venvseal.store.fixed import FixedOutput, build_fixed, flushing, realise_fixed
from venvseal.store.nar import nar_hash


class Undeclared(VenvsealError):
    pass


def content(text: str):  # type: ignore[no-untyped-def]
    calls: list[Path] = []

    def build(out: Path, work: Path) -> dict[str, str]:
        calls.append(out)
        assert out.parent == work and not out.exists()
        out.mkdir()
        (out / "f").write_text(text)
        return {"what": text}

    return build, calls


def hash_of(tmp_path: Path, text: str) -> Sha256:
    tree = tmp_path / f"tree-{text}"
    tree.mkdir()
    (tree / "f").write_text(text)
    return nar_hash(tree).hash


def spec(declared: Sha256 | None, *, accept_any: bool = False) -> FixedOutput:
    return FixedOutput(name="thing-src", declared=declared, inputs={"stage": "test"},
                       undeclared=lambda got: Undeclared(f"declare {got.sri}"),
                       accept_any=accept_any)


def test_declared_hash_builds_once_then_reuses(tmp_path: Path) -> None:
    good = hash_of(tmp_path, "good")
    with Store(tmp_path / "store") as store:
        build, calls = content("good")
        first = realise_fixed(store, spec(good), build)
        assert first.how == "built" and first.path == store.make_fixed_path("thing-src", good)
        assert store.query(first.path).inputs == {"stage": "test", "what": "good"}  # type: ignore[union-attr]
        again = realise_fixed(store, spec(good), build)
        assert (again.how, again.path, len(calls)) == ("valid", first.path, 1)


@pytest.mark.parametrize("declared, error", [
    (None, Undeclared),
    ("bad", HashMismatchError),
], ids=["undeclared", "mismatch"])
def test_a_refused_hash_adds_nothing(tmp_path: Path, declared: str | None,
                                     error: type[Exception]) -> None:
    wanted = None if declared is None else hash_of(tmp_path, declared)
    with Store(tmp_path / "store") as store:
        build, _calls = content("good")
        with pytest.raises(error) as info:
            realise_fixed(store, spec(wanted), build)
        assert hash_of(tmp_path, "good").sri in str(info.value)
        assert store.paths() == [] and os.listdir(store.root / ".tmp") == []


def test_accept_any_takes_what_was_built(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        build, _calls = content("new")
        built = build_fixed(store, spec(hash_of(tmp_path, "old"), accept_any=True), build)
        assert built.realised.info.nar_hash == hash_of(tmp_path, "new")
        assert built.report == {"what": "new"}


def test_a_hash_tree_finishes_the_build_in_its_read(tmp_path: Path) -> None:
    """The deps stage's hash_tree edits the tree as it hashes: what it returns is what is
    checked, added and reported, and the tree is sealed with the store's time."""
    build, _ = content("before")
    seen: list[int] = []

    def hash_tree(tree: Path, report: dict[str, str], mtime: int):  # type: ignore[no-untyped-def]
        seen.append(mtime)
        (tree / "f").write_text("after")
        return nar_hash(tree, seal_mtime=mtime), {**report, "finished": "yes"}

    with Store(tmp_path / "store") as store:
        out = FixedOutput(name="x", declared=hash_of(tmp_path, "after"), undeclared=Undeclared)
        built = build_fixed(store, out, build, hash_tree=hash_tree)
        assert built.report == {"what": "before", "finished": "yes"}
        assert (built.realised.path / "f").read_text() == "after"
        assert seen == [int(os.stat(built.realised.path / "f").st_mtime)]


def test_flushing_runs_beside_the_block_and_never_fails_it(tmp_path: Path) -> None:
    ran = []
    with flushing(tmp_path):
        ran.append(threading.active_count())
    with flushing(tmp_path / "missing"):  # the flush fails: the later sync says so
        ran.append(1)
    assert len(ran) == 2
    assert not [t for t in threading.enumerate() if t.name == "venvseal-flush"]
