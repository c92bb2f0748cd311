"""ELF detection and the deterministic build-id, on shared objects built with the host gcc."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from venvseal.elf.buildid import (
    ElfFormatError,
    find_elf_files,
    is_elf,
    set_deterministic_build_id,
)
from venvseal.process import run

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("strip") is None,
    reason="needs the host gcc and binutils (Debian: apt-get install gcc binutils)",
)

C_SOURCE = "int venvseal_answer(void) { return 42; }\n"


def build_so(parent: Path, out: Path, build_id: str = "sha1") -> Path:
    """Compile C_SOURCE from a fresh random directory under ``parent``, like uv's sdist dirs."""
    src_dir = Path(tempfile.mkdtemp(dir=parent, prefix="sdist-"))
    (src_dir / "ext.c").write_text(C_SOURCE)
    run(["gcc", "-g", "-shared", "-fPIC", f"-Wl,--build-id={build_id}", "-o", str(out), "ext.c"],
        what="gcc", cwd=src_dir)
    return out


def strip_debug(*paths: Path) -> None:
    run(["strip", "--strip-debug", *map(str, paths)], what="strip --strip-debug")


def build_ids(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return [bytes(note["n_descdata"]) for section in elf.iter_sections()
                if isinstance(section, NoteSection) for note in section.iter_notes()
                if note["n_type"] == "NT_GNU_BUILD_ID"]


def test_two_builds_from_random_dirs_become_identical(tmp_path: Path) -> None:
    a = build_so(tmp_path, tmp_path / "a.so")
    b = build_so(tmp_path, tmp_path / "b.so")
    assert a.read_bytes() != b.read_bytes()
    strip_debug(a, b)
    # strip removed the build directory, but the linker hashed it into the build-id.
    assert str(tmp_path).encode() not in a.read_bytes()
    assert a.read_bytes() != b.read_bytes()
    assert build_ids(a) != build_ids(b)

    assert set_deterministic_build_id(a) is True
    assert set_deterministic_build_id(b) is True
    assert a.read_bytes() == b.read_bytes()


def test_build_id_is_recomputed_idempotently(tmp_path: Path) -> None:
    so = build_so(tmp_path, tmp_path / "x.so")
    set_deterministic_build_id(so)
    once = so.read_bytes()
    assert set_deterministic_build_id(so) is False
    assert so.read_bytes() == once


@pytest.mark.parametrize(("style", "length"), [
    ("sha1", 20),
    ("md5", 16),
    ("uuid", 16),
    ("0x" + "ab" * 32, 32),  # longer than a sha1 digest
])
def test_build_id_length_and_file_size_are_kept(tmp_path: Path, style: str, length: int) -> None:
    so = build_so(tmp_path, tmp_path / "x.so", build_id=style)
    size = so.stat().st_size
    [old] = build_ids(so)
    assert len(old) == length
    assert set_deterministic_build_id(so) is True
    [new] = build_ids(so)
    assert len(new) == length
    assert new != old
    assert so.stat().st_size == size


def test_file_without_build_id_is_left_alone(tmp_path: Path) -> None:
    so = build_so(tmp_path, tmp_path / "x.so", build_id="none")
    before = so.read_bytes()
    assert set_deterministic_build_id(so) is False
    assert so.read_bytes() == before


def test_note_found_through_pt_note_without_section_headers(tmp_path: Path) -> None:
    a = build_so(tmp_path, tmp_path / "a.so")
    b = build_so(tmp_path, tmp_path / "b.so")
    strip_debug(a, b)
    for so in (a, b):
        data = bytearray(so.read_bytes())
        # ELF64 header: e_shoff at 0x28 (8 bytes), e_shnum at 0x3c, e_shstrndx at 0x3e.
        data[0x28:0x30] = bytes(8)
        data[0x3C:0x40] = bytes(4)
        so.write_bytes(data)
    assert a.read_bytes() != b.read_bytes()
    assert set_deterministic_build_id(a) is True
    assert set_deterministic_build_id(b) is True
    assert a.read_bytes() == b.read_bytes()


def test_is_elf(tmp_path: Path) -> None:
    so = build_so(tmp_path, tmp_path / "real.so")
    fake = tmp_path / "fake.so"
    fake.write_text("INPUT(-lfoo)\n")  # a linker script named like a library
    empty = tmp_path / "empty.so"
    empty.touch()
    assert is_elf(so)
    assert not is_elf(fake)
    assert not is_elf(empty)


def test_find_elf_files_sorted_regular_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "pkg" / "sub").mkdir(parents=True)
    b = build_so(tmp_path, root / "pkg" / "b.so")
    a = build_so(tmp_path, root / "pkg" / "sub" / "a.so")
    z = shutil.copy(b, root / "z.so")
    (root / "pkg" / "fake.so").write_text("not elf")
    (root / "pkg" / "link.so").symlink_to(b)
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    assert find_elf_files(root) == [b, a, Path(z)]


@pytest.mark.parametrize("cut", ["header", "program headers", "before note", "section headers"])
def test_truncated_elf_is_rejected_naming_the_file(tmp_path: Path, cut: str) -> None:
    so = build_so(tmp_path, tmp_path / "x.so")
    data = so.read_bytes()
    with open(so, "rb") as f:
        elf = ELFFile(f)
        note = elf.get_section_by_name(".note.gnu.build-id")
        assert note is not None
        note_offset = note["sh_offset"]
        shoff = elf["e_shoff"]
    length = {"header": 20, "program headers": 100, "before note": note_offset + 14,
              "section headers": shoff + 10}[cut]
    broken = tmp_path / "broken.so"
    broken.write_bytes(data[:length])
    with pytest.raises(ElfFormatError, match=r"broken\.so"):
        set_deterministic_build_id(broken)
    assert broken.read_bytes() == data[:length]


def test_non_elf_is_rejected(tmp_path: Path) -> None:
    fake = tmp_path / "fake.so"
    fake.write_text("INPUT(-lfoo)\n")
    with pytest.raises(ElfFormatError, match=r"fake\.so: not a valid ELF file"):
        set_deterministic_build_id(fake)
