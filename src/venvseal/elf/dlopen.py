"""ELF dlopen metadata: the libraries a library says it may ``dlopen`` at run time.

The format is the freedesktop/systemd "package notes" one (uapi-group.org/specifications/
specs/elf_dlopen_metadata): a note of type :data:`NOTE_TYPE` with owner ``FDO`` in a
``.note.dlopen`` section, whose descriptor is a NUL-terminated JSON array of objects, each
with a ``soname`` list (alternatives, first preferred), a ``feature``, a ``description`` and
a ``priority`` (``required``, ``recommended`` or ``suggested``). systemd, for one, marks its
optional libraries (libcryptsetup, libidn2, ...) this way.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

NOTE_TYPE = 0x407C0C0A
OWNER = b"FDO"
SECTION = ".note.dlopen"


@dataclass(frozen=True, slots=True)
class DlopenEntry:
    """One feature's libraries: ``sonames`` are alternatives, the first one preferred."""

    sonames: tuple[str, ...]
    feature: str = ""
    priority: str = "recommended"


def parse_notes(data: bytes, little_endian: bool = True) -> list[DlopenEntry]:
    """The dlopen entries in the raw bytes of a note section (others are skipped)."""
    order = "<" if little_endian else ">"
    entries: list[DlopenEntry] = []
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(f"{order}III", data, offset)
        offset += 12
        name = data[offset:offset + namesz].rstrip(b"\0")
        offset += (namesz + 3) & ~3
        desc = data[offset:offset + descsz]
        offset += (descsz + 3) & ~3
        if kind == NOTE_TYPE and name == OWNER:
            entries += _entries(desc)
    return entries


def _entries(desc: bytes) -> list[DlopenEntry]:
    try:
        doc = json.loads(desc.rstrip(b"\0").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return []  # a damaged note says nothing we could act on
    found: list[DlopenEntry] = []
    for item in doc if isinstance(doc, list) else []:
        sonames = item.get("soname") if isinstance(item, dict) else None
        if isinstance(sonames, list) and sonames and all(isinstance(s, str) for s in sonames):
            found.append(DlopenEntry(tuple(sonames), str(item.get("feature", "")),
                                     str(item.get("priority", "recommended"))))
    return found


def dlopen_notes(file: Path) -> list[DlopenEntry]:
    """The dlopen entries of the ELF file ``file``; none if it has none or is no ELF file."""
    try:
        with file.open("rb") as f:
            elf = ELFFile(f)
            section = elf.get_section_by_name(SECTION)
            if section is None:
                return []
            return parse_notes(section.data(), elf.little_endian)
    except (ELFError, OSError, struct.error):
        return []
