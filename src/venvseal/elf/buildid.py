"""ELF detection and a deterministic GNU build-id.

The linker computes ``.note.gnu.build-id`` over its whole output, debug info included
(ld ``--build-id``, binutils ld/ldbuildid.c). DWARF carries the directory a C extension was
compiled in, which uv makes random per build (its sdist cache path), so two builds of the
same source differ in the build-id even after ``strip --strip-debug`` removed the path.
:func:`set_deterministic_build_id` recomputes the id from the file's final bytes, the way
``debugedit --build-id`` does, so equal content gives an equal id.

Only reads go through pyelftools; the single write is the descriptor, in place, same length.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # pyelftools is imported where a file is parsed: it costs ~0.1 s at start
    from elftools.construct.lib.container import Container
    from elftools.elf.elffile import ELFFile

from venvseal.errors import PathError

ELF_MAGIC = b"\x7fELF"
_CHUNK = 1 << 20
# ELF gABI "Note Section": namesz, descsz, type, each a 4-byte word, in ELFCLASS32 and 64 alike.
_NOTE_HEADER_SIZE = 12


class ElfFormatError(PathError):
    """A file starts like ELF but its headers or notes cannot be read."""

    template = ("{path}: not a valid ELF file ({problem}); the package that installed it ships "
                "a truncated or damaged binary: rebuild or exclude it")


def is_elf(path: Path) -> bool:
    """Whether ``path`` starts with the ELF magic (reads 4 bytes)."""
    with open(path, "rb") as f:
        return f.read(len(ELF_MAGIC)) == ELF_MAGIC


def find_elf_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` that is ELF, sorted; symlinks are never followed."""
    return [path for path in _regular_files(root) if is_elf(path)]


def _regular_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` in sorted name order, without following symlinks."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _regular_files(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def set_deterministic_build_id(path: Path) -> bool:
    """Replace the GNU build-id with a hash of the file; return whether the bytes changed.

    The new descriptor is the first N bytes (N = its current length, so every offset stays)
    of sha1 over the whole file with the descriptor bytes zeroed. A file without a build-id
    note is left alone. Raises ElfFormatError for a truncated or malformed ELF.
    """
    with open(path, "r+b") as f:
        holes = build_id_descriptors(f, path)
        if not holes:
            return False
        digest = _digest_with_holes(f, holes)
        changed = False
        for offset, size in holes:
            new = _stretch(digest, size)
            f.seek(offset)
            if f.read(size) != new:
                f.seek(offset)
                f.write(new)
                changed = True
        return changed


def build_id_descriptors(f: BinaryIO, path: Path) -> list[tuple[int, int]]:
    """Sorted (file offset, size) of each GNU build-id descriptor in the ELF file ``f``.

    Looks at note sections and, for files without section headers, PT_NOTE segments; both
    usually cover the same note, so offsets are deduplicated.
    """
    from elftools.elf.elffile import ELFFile

    with elf_errors(path):
        elf = ELFFile(f)
        notes = list(_notes(elf))
        file_size = os.fstat(f.fileno()).st_size
        found = {_descriptor(note, path, file_size) for note in notes
                 if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU"}
    return sorted(found)


@contextmanager
def elf_errors(path: Path) -> Iterator[None]:
    """Turn what pyelftools raises on a damaged ``path`` into ElfFormatError naming it."""
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError

    try:
        yield
    except (ELFError, ConstructError, struct.error, ValueError, EOFError) as err:
        raise ElfFormatError(path, str(err) or type(err).__name__) from err
    except OSError as err:
        # A corrupt header offset makes pyelftools seek before the start of the file.
        if err.errno != errno.EINVAL:
            raise
        raise ElfFormatError(path, f"an offset in its headers is invalid ({err})") from err


def _notes(elf: ELFFile) -> Iterator[Container]:
    """Every note in note sections, or in PT_NOTE segments when there are no sections."""
    from elftools.elf.sections import NoteSection
    from elftools.elf.segments import NoteSegment

    if elf.num_sections() > 0:
        for section in elf.iter_sections():
            if isinstance(section, NoteSection):
                yield from section.iter_notes()
        return
    for segment in elf.iter_segments():
        if isinstance(segment, NoteSegment):
            yield from segment.iter_notes()


def _descriptor(note: Container, path: Path, file_size: int) -> tuple[int, int]:
    """File offset and size of a note's descriptor, checked against the file's end."""
    # gABI: the name is padded to a 4-byte boundary, then the descriptor follows.
    offset = note["n_offset"] + _NOTE_HEADER_SIZE + (-note["n_namesz"] % 4 + note["n_namesz"])
    size = note["n_descsz"]
    if size == 0 or offset + size > file_size or len(note["n_descdata"]) != size:
        raise ElfFormatError(path, f"build-id note at offset {note['n_offset']} runs past the "
                             f"end of the file or is empty")
    return offset, size


def _digest_with_holes(f: BinaryIO, holes: list[tuple[int, int]]) -> bytes:
    """sha1 of the whole file with the bytes in ``holes`` read as zeros."""
    sha = hashlib.sha1()
    f.seek(0)
    position = 0
    while chunk := f.read(_CHUNK):
        buf = bytearray(chunk)
        for offset, size in holes:
            start, end = max(offset - position, 0), min(offset + size - position, len(buf))
            if start < end:
                buf[start:end] = bytes(end - start)
        sha.update(buf)
        position += len(buf)
    return sha.digest()


def _stretch(digest: bytes, size: int) -> bytes:
    """``size`` bytes from ``digest``: its prefix, extended by sha1(digest || counter) if longer.

    Build-ids are 20 bytes (sha1, ld's default) or 16 (md5, uuid); only ``--build-id=0x<hex>``
    gives longer ones.
    """
    out = digest
    counter = 1
    while len(out) < size:
        out += hashlib.sha1(digest + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:size]

