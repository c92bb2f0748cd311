"""Shared test helpers (moved from test_nar.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from venvseal.store.nar import BUFFER_SIZE, dump_nar


def random_name(rng: random.Random) -> bytes:
    pieces = [
        b"a",
        b"Z",
        b"_",
        b".",
        b"-",
        b"0",
        "é".encode(),
        "ß".encode(),
        "\ue000".encode(),
        "😀".encode(),
        b"\xff",
        b"\x80",
        b" ",
    ]
    name = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
    return b"n" + name if name in (b".", b"..") else name


def dumped(path: Path | bytes) -> bytes:
    """``dump_nar``'s whole output, checking every chunk is kept-safe ``bytes`` of sane size."""
    chunks: list[bytes | memoryview] = []
    dump_nar(os.fsdecode(path), chunks.append)
    assert all(isinstance(c, bytes) and 0 < len(c) <= BUFFER_SIZE for c in chunks)
    return b"".join(bytes(c) for c in chunks)



def write(path: Path | str | bytes, data: bytes = b"", mode: int = 0o644) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)



@pytest.fixture
def mixed_tree(tmp_path: Path) -> Path:
    """Every kind of node and every naming hazard the issue lists."""
    root = tmp_path / "tree"
    (root / "pkg" / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "pkg" / "empty-nested").mkdir()
    write(root / "pkg" / "__init__.py", b"print('hello')\n")
    write(root / "pkg" / "sub" / "deeper" / "data.bin", bytes(range(256)) * 3)
    write(root / "empty-file")
    write(root / "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write(root / "owner-exec-only", b"x", 0o700)
    os.symlink("pkg/__init__.py", root / "relative-link")
    os.symlink("/etc/hostname", root / "absolute-link")
    os.symlink("no/such/target", root / "dangling-link")
    os.symlink("sub", root / "pkg" / "link-to-dir")
    write(root / "café.py", "é".encode() * 9)
    raw = os.fsencode(root)
    write(raw + b"/not-utf8-\xff\xfe")
    # UTF-8 keeps code point order, except against names that are not UTF-8: as str,
    # b"\xff" decodes to "\udcff", which sorts before "\ue000"; as bytes it sorts after.
    write(raw + b"/\xff")
    write(root / "\ue000", b"private use")
    write(root / "Zebra")
    write(root / "apple")
    return root



def random_tree(rng: random.Random, root: bytes, depth: int = 0) -> None:
    """A random directory of files, executables, symlinks and subdirectories under ``root``."""
    os.mkdir(root)
    for _ in range(rng.randint(0, 8)):
        path = root + b"/" + random_name(rng)
        if os.path.lexists(path):
            continue
        kind = rng.random()
        if kind < 0.15 and depth < 4:
            random_tree(rng, path, depth + 1)
        elif kind < 0.25:
            os.symlink(random_name(rng) + b"/" + random_name(rng), path)
        else:
            big = rng.random() < 0.05
            size = rng.randint(BUFFER_SIZE // 2, 2 * BUFFER_SIZE) if big else rng.randint(0, 3000)
            write(path, rng.randbytes(size), rng.choice([0o644, 0o755, 0o600, 0o711]))
