"""Properties of the NAR reader (hypothesis, bounded budget).

- any tree serialised restores to the same tree, with the NAR's own hash and size;
- any damage to a valid NAR (a byte changed, bytes cut or added) either restores a tree
  whose NAR hash is the hash the reader reports, or is refused with a NarFormatError and
  nothing at the destination: never another exception, never a partial tree.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.nars import Exe, Link, Node, nar

from venvseal.hashes import Sha256
from venvseal.store.nar import nar_hash
from venvseal.store.narread import NarFormatError, restore_nar

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

file_names = st.text(st.sampled_from("abcXYZ._-é+"), min_size=1, max_size=6).filter(
    lambda n: n not in (".", ".."))
leaves = st.one_of(st.binary(max_size=64), st.binary(max_size=16).map(Exe),
                   st.text(st.sampled_from("ab/."), min_size=1, max_size=8).map(Link))
trees: st.SearchStrategy[Node] = st.recursive(
    leaves, lambda children: st.dictionaries(file_names, children, max_size=4),
    max_leaves=12)


def fresh(tmp_path: Path) -> Path:
    return tmp_path / f"t{os.urandom(6).hex()}"


@SETTINGS
@given(tree=trees)
def test_any_tree_restores_to_its_own_nar(tree: Node, tmp_path: Path) -> None:
    data = nar(tree)
    dest = fresh(tmp_path)
    result = restore_nar(io.BytesIO(data), dest)
    assert (result.hash, result.size) == (Sha256(hashlib.sha256(data).digest()), len(data))
    assert nar_hash(dest).hash == result.hash


damages = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("add"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


def damage(data: bytes, how: tuple[str, int, object]) -> bytes:
    kind, at, what = how
    at %= len(data)
    if kind == "flip":
        assert isinstance(what, int)
        return data[:at] + bytes([data[at] ^ what]) + data[at + 1:]
    if kind == "cut":
        assert isinstance(what, int)
        return data[:at] + data[at + what:]
    assert isinstance(what, bytes)
    return data[:at] + what + data[at:]


@SETTINGS
@given(tree=trees, how=damages)
def test_damaged_archives_are_refused_cleanly_or_read_exactly(
        tree: Node, how: tuple[str, int, object], tmp_path: Path) -> None:
    data = damage(nar(tree), how)
    dest = fresh(tmp_path)
    try:
        result = restore_nar(io.BytesIO(data), dest)
    except NarFormatError:
        assert not os.path.lexists(dest)
        return
    # Accepted: then it was a canonical NAR, all of it, and the tree hashes to it.
    assert (result.hash, result.size) == (Sha256(hashlib.sha256(data).digest()), len(data))
    assert nar_hash(dest).hash == result.hash


@SETTINGS
@given(data=st.binary(max_size=512))
def test_random_bytes_never_crash_the_reader(data: bytes, tmp_path: Path) -> None:
    dest = fresh(tmp_path)
    try:
        restore_nar(io.BytesIO(b"\x0d" + bytes(7) + b"nix-archive-1\0\0\0" + data), dest)
    except NarFormatError:
        assert not os.path.lexists(dest)
