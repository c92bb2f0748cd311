"""venvseal.nar against the real ``nix-hash`` (Debian package nix-bin).

Every hash is checked against ``nix-hash --type sha256 [--base32] PATH``: Nix itself is the
specification. If nix-hash is missing these tests fail, on purpose: CI installs nix-bin.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.trees import dumped, random_tree, write

from venvseal.errors import EXIT_BUILD, EXIT_USAGE, UsageError
from venvseal.store import nar
from venvseal.store.nar import BUFFER_SIZE, NarError, NarPathNotFoundError, dump_nar, nar_hash


def nix_hash(path: Path | bytes, *, base32: bool = False) -> str:
    """What the real ``nix-hash --type sha256`` prints for ``path``."""
    exe = shutil.which("nix-hash")
    if exe is None:
        pytest.fail(
            "nix-hash not found: install nix-bin (apt-get install nix-bin); these tests "
            "check venvseal's NAR hashes against the real Nix"
        )
    argv = [os.fsencode(exe), b"--type", b"sha256", *([b"--base32"] if base32 else [])]
    out = subprocess.run([*argv, os.fsencode(path)], capture_output=True, check=True)
    return out.stdout.decode().strip()




def assert_matches_nix(path: Path | bytes) -> nar.NarResult:
    """Our hash equals nix-hash's in all three spellings, and dump_nar agrees with nar_hash."""
    result = nar_hash(os.fsdecode(path))
    base16 = nix_hash(path)
    assert result.hash.base16 == base16
    assert result.hash.nix32 == nix_hash(path, base32=True)
    assert result.hash.sri == "sha256-" + base64.b64encode(bytes.fromhex(base16)).decode()
    stream = dumped(path)
    assert hashlib.sha256(stream).hexdigest() == base16
    assert result.size == len(stream)
    return result






def test_mixed_tree_matches_nix_hash(mixed_tree: Path) -> None:
    result = assert_matches_nix(mixed_tree)
    assert result.files == 15  # 11 regular files + 4 symlinks


def test_entries_are_in_byte_order_not_str_order(mixed_tree: Path) -> None:
    stream = dumped(mixed_tree)
    private_use = "\ue000".encode()
    assert stream.index(b"\x01\x00\x00\x00\x00\x00\x00\x00\xff") > stream.index(private_use)
    assert sorted([os.fsdecode(b"\xff"), "\ue000"]) == [os.fsdecode(b"\xff"), "\ue000"]


@pytest.mark.parametrize("mode", [0o644, 0o755, 0o700, 0o654, 0o645, 0o444, 0o100], ids=oct)
def test_only_owner_execute_bit_marks_executable(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "f"
    write(path, b"#!/bin/sh\n", mode)
    stream = dumped(path)
    assert (b"executable" in stream) == bool(mode & stat.S_IXUSR)
    assert_matches_nix(path)


@pytest.mark.parametrize(
    "size",
    [0, 1, 7, 8, 9, BUFFER_SIZE - 1, BUFFER_SIZE, BUFFER_SIZE + 1, 3 * BUFFER_SIZE - 120],
)
def test_file_sizes_around_buffer_boundaries(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    alone = tmp_path / "alone"
    write(alone, data)
    assert_matches_nix(alone)
    # In a directory the framing before the contents shifts them across the buffer's end.
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tree / "a", data)
    write(tree / "b", data[: size // 2], 0o755)
    assert assert_matches_nix(tree).files == 2


def test_large_file(tmp_path: Path) -> None:
    path = tmp_path / "big"
    write(path, random.Random(50).randbytes(50 * 10**6 + 3))
    result = assert_matches_nix(path)
    assert result.size > 50 * 10**6


@pytest.mark.parametrize(
    "target",
    ["relative/target", "/absolute/target", "x" * 3000],
    ids=["relative", "absolute", "long"],
)
def test_symlink_as_top_path(tmp_path: Path, target: str) -> None:
    link = tmp_path / "link"
    os.symlink(target, link)
    result = assert_matches_nix(link)
    assert result.files == 1


def test_symlink_to_directory_as_top_path_is_not_followed(tmp_path: Path, mixed_tree: Path) -> None:
    link = tmp_path / "link"
    os.symlink(mixed_tree, link)
    assert assert_matches_nix(link).size < 200


def test_empty_directory_as_top_path(tmp_path: Path) -> None:
    assert assert_matches_nix(tmp_path).files == 0


def test_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    # Built and removed level by level: pathlib, os.makedirs and shutil.rmtree all recurse.
    levels = [str(tmp_path / "d")]
    for _ in range(1100):
        os.mkdir(levels[-1])
        levels.append(levels[-1] + "/d")
    write(levels[-2] + "/leaf", b"bottom")
    try:
        assert assert_matches_nix(tmp_path / "d").files == 1
    finally:
        os.remove(levels[-2] + "/leaf")
        for level in reversed(levels[:-1]):
            os.rmdir(level)






@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random_trees_match_nix_hash(tmp_path: Path, seed: int) -> None:
    root = os.fsencode(tmp_path / "random")
    random_tree(random.Random(seed), root)
    assert_matches_nix(root)


def test_progress_for_a_single_file(tmp_path: Path) -> None:
    write(tmp_path / "f", b"12345")
    seen: list[int] = []
    assert nar_hash(tmp_path / "f", progress=seen.append).files == 1
    assert seen == [5]


def test_progress_reports_each_regular_file_size(mixed_tree: Path) -> None:
    seen: list[int] = []
    nar_hash(mixed_tree, progress=seen.append)
    expected = [
        os.lstat(os.path.join(d, n)).st_size
        for d, _, names in os.walk(os.fsencode(mixed_tree))
        for n in names
        if not os.path.islink(os.path.join(d, n))
    ]
    assert sorted(seen) == sorted(expected)


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


@pytest.mark.parametrize(
    ("make", "word"),
    [(make_fifo, "named pipe (fifo)"), (make_socket, "socket")],
)
@pytest.mark.parametrize("top", [True, False], ids=["top", "nested"])
@pytest.mark.parametrize(
    "run", [nar_hash, lambda p: dump_nar(p, lambda b: None)], ids=["nar_hash", "dump_nar"]
)
def test_special_files_are_refused(
    tmp_path: Path,
    make: Callable[[Path], None],
    word: str,
    top: bool,
    run: Callable[[Path], object],
) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    special = tmp_path / "tree" / "sub" / "special"
    make(special)
    with pytest.raises(NarError) as info:
        run(special if top else tmp_path / "tree")
    message = str(info.value)
    assert message.startswith(f"{special}: is a {word}")
    assert "remove it" in message
    assert info.value.exit_code == EXIT_BUILD


@pytest.mark.parametrize("relative", ["no-such-dir", "a-file/below-it", "no-such-dir/x"])
def test_missing_path_is_a_usage_error(tmp_path: Path, relative: str) -> None:
    write(tmp_path / "a-file", b"x")
    missing = tmp_path / relative
    with pytest.raises(NarPathNotFoundError) as info:
        nar_hash(missing)
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code == EXIT_USAGE
    assert str(info.value) == f"{missing}: does not exist; check the path, or build it first"


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "secret", b"x")
    real_open = os.open

    # Tests run as root in CI, where chmod 000 does not stop a read: simulate EACCES instead.
    def open_denied(
        path: bytes, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if path == b"secret":
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_denied)
    with pytest.raises(NarError) as info:
        nar_hash(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}/secret: cannot be read (permission denied)")


def test_unreadable_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    write(tmp_path / "locked" / "inside", b"x")
    real_scandir = os.scandir

    def scandir_denied(path: bytes) -> Iterator[os.DirEntry[bytes]]:
        if path.endswith(b"/locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_denied)
    with pytest.raises(NarError) as info:
        nar_hash(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}/locked: cannot be read (permission denied); "
        "make it readable (chmod u+r, or u+rx for a directory) and retry"
    )


def test_file_shrinking_while_read_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "log", b"12345")
    real_fstat = os.fstat

    def fstat_larger(fd: int) -> os.stat_result:
        fields = list(real_fstat(fd))
        fields[stat.ST_SIZE] += 10  # as if the file lost 10 bytes between fstat and read
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", fstat_larger)
    with pytest.raises(NarError, match="log: shrank while being read"):
        nar_hash(tmp_path)


def test_error_names_non_utf8_paths_readably(tmp_path: Path) -> None:
    os.mkfifo(os.fsencode(tmp_path) + b"/pipe-\xff")
    with pytest.raises(NarError) as info:
        nar_hash(tmp_path)
    assert f"{tmp_path}/pipe-\\xff: is a named pipe" in str(info.value)
