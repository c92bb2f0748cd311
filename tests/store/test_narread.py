"""venvseal.narread: NAR streams restored into trees, and hostile streams refused.

Round trips go through :func:`venvseal.nar.dump_nar`, itself checked against the real
``nix-hash`` in test_nar.py, so a tree restored here with the same bytes is what Nix would
restore. Malformed archives are written by hand, token by token.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import pytest
from support.trees import dumped, mixed_tree, random_tree, write

from venvseal.errors import VenvsealError
from venvseal.store.nar import BUFFER_SIZE, nar_hash
from venvseal.store.narread import DEPTH_MAX, NAME_MAX, NarFormatError, restore_nar

__all__ = ["mixed_tree"]  # a fixture, used by name


def s(data: bytes | str) -> bytes:
    """One NAR string."""
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(8, "little") + raw + bytes(-len(raw) % 8)


def tokens(*items: bytes | str) -> bytes:
    return b"".join(s(i) for i in items)


def regular(contents: bytes, *, executable: bool = False) -> bytes:
    flag = tokens("executable", "") if executable else b""
    return tokens("(", "type", "regular") + flag + s("contents") + s(contents) + s(")")


def symlink(target: bytes | str) -> bytes:
    return tokens("(", "type", "symlink", "target", target, ")")


def directory(*entries: tuple[bytes | str, bytes]) -> bytes:
    body = b"".join(tokens("entry", "(", "name", name, "node") + node + s(")")
                    for name, node in entries)
    return tokens("(", "type", "directory") + body + s(")")


def nar(node: bytes) -> bytes:
    return s("nix-archive-1") + node


def round_trip(source: Path, dest: Path) -> None:
    """Dump ``source``, restore it at ``dest``; same bytes back, and the hash without a pass."""
    stream = dumped(source)
    result = restore_nar(io.BytesIO(stream), dest)
    assert result.hash.digest == hashlib.sha256(stream).digest()
    assert result.size == len(stream)
    assert dumped(dest) == stream
    assert nar_hash(dest) == result


def test_mixed_tree_round_trips(mixed_tree: Path, tmp_path: Path) -> None:
    round_trip(mixed_tree, tmp_path / "restored")
    assert os.access(tmp_path / "restored" / "run.sh", os.X_OK)
    assert not os.access(tmp_path / "restored" / "apple", os.X_OK)
    assert os.readlink(tmp_path / "restored" / "dangling-link") == "no/such/target"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_trees_round_trip(tmp_path: Path, seed: int) -> None:
    source = tmp_path / "random"
    random_tree(random.Random(seed), os.fsencode(source))
    round_trip(source, tmp_path / "restored")


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, BUFFER_SIZE - 1, BUFFER_SIZE + 1,
                                  3 * BUFFER_SIZE - 120])
def test_single_files_of_every_size_round_trip(tmp_path: Path, size: int) -> None:
    write(tmp_path / "f", os.urandom(size), 0o755 if size % 2 else 0o644)
    round_trip(tmp_path / "f", tmp_path / "restored")


def test_top_level_symlink_and_empty_directory_round_trip(tmp_path: Path) -> None:
    os.symlink("../somewhere", tmp_path / "link")
    round_trip(tmp_path / "link", tmp_path / "restored-link")
    (tmp_path / "empty").mkdir()
    round_trip(tmp_path / "empty", tmp_path / "restored-empty")


def test_reads_from_a_callable_with_short_reads(tmp_path: Path, mixed_tree: Path) -> None:
    stream = io.BytesIO(dumped(mixed_tree))
    result = restore_nar(lambda n: stream.read(min(n, 3)), tmp_path / "restored")
    assert result == nar_hash(tmp_path / "restored")


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o177)
    try:
        restore_nar(io.BytesIO(nar(regular(b"#!/bin/sh\n", executable=True))), tmp_path / "x")
    finally:
        os.umask(old)
    assert os.access(tmp_path / "x", os.X_OK)


GOOD = directory(("a", regular(b"1")), ("b", symlink("a")))
BAD_NARS = {
    "empty stream": b"",
    "wrong magic": s("nix-archive-2") + regular(b""),
    "unknown node type": nar(tokens("(", "type", "fifo", ")")),
    "executable flag with a value": nar(tokens("(", "type", "regular", "executable", "yes",
                                               "contents", "", ")")),
    "entries out of order": nar(directory(("b", regular(b"")), ("a", regular(b"")))),
    "repeated entry": nar(directory(("a", regular(b"")), ("a", regular(b"")))),
    "dot-dot entry": nar(directory(("..", regular(b"escape")))),
    "dot entry": nar(directory((".", regular(b"")))),
    "empty name": nar(directory(("", regular(b"")))),
    "slash in a name": nar(directory(("x/y", regular(b"")))),
    "NUL in a name": nar(directory((b"x\0y", regular(b"")))),
    "name too long": nar(directory(("n" * (NAME_MAX + 1), regular(b"")))),
    "empty symlink target": nar(symlink("")),
    "NUL in a symlink target": nar(symlink(b"a\0b")),
    "huge length": nar(tokens("(", "type", "directory", "entry", "(", "name"))
                   + (1 << 62).to_bytes(8, "little"),
    "trailing data": nar(GOOD) + s("more"),
    "missing close of an entry": nar(tokens("(", "type", "directory", "entry", "(", "name", "a",
                                            "node") + regular(b"") + s(")")),
    "too deep": nar(tokens(*["(", "type", "directory", "entry", "(", "name", "d", "node"]
                           * (DEPTH_MAX + 1))),
}


@pytest.mark.parametrize("data", BAD_NARS.values(), ids=BAD_NARS.keys())
def test_malformed_archives_are_refused_and_leave_nothing(tmp_path: Path, data: bytes) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(NarFormatError) as caught:
        restore_nar(io.BytesIO(data), dest)
    assert isinstance(caught.value, VenvsealError)
    assert str(dest) in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_non_zero_padding_is_refused(tmp_path: Path) -> None:
    data = bytearray(nar(directory(("a", regular(b"12345")))))
    data[data.index(b"12345") + 5] = 1  # the first of the contents' three padding bytes
    with pytest.raises(NarFormatError, match="padding"):
        restore_nar(io.BytesIO(bytes(data)), tmp_path / "dest")
    assert not os.path.lexists(tmp_path / "dest")


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    data = nar(directory(("a", regular(b"12345", executable=True)),
                         ("d", directory(("l", symlink("../a")))), ("z", regular(b""))))
    assert restore_nar(io.BytesIO(data), tmp_path / "whole").files == 3
    for cut in range(len(data)):
        with pytest.raises(NarFormatError):
            restore_nar(io.BytesIO(data[:cut]), tmp_path / "dest")
        assert not os.path.lexists(tmp_path / "dest")


@pytest.mark.parametrize("problem", ["out of order", "dot-dot", "padding"])
def test_errors_say_what_is_wrong(tmp_path: Path, problem: str) -> None:
    data = {"out of order": BAD_NARS["entries out of order"],
            "dot-dot": BAD_NARS["dot-dot entry"],
            "padding": nar(regular(b"x"))[:-17] + b"\x01" + s(")")}[problem]
    with pytest.raises(NarFormatError) as caught:
        restore_nar(io.BytesIO(data), tmp_path / "dest")
    message = str(caught.value)
    assert {"out of order": "out of order", "dot-dot": "not a plain file name",
            "padding": "padding"}[problem] in message
    assert "(at byte " in message


def test_destination_must_not_exist(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    with pytest.raises(NarFormatError, match="exists already"):
        restore_nar(io.BytesIO(nar(GOOD)), tmp_path / "dest")
    assert os.listdir(tmp_path / "dest") == []
