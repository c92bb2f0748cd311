"""ELF dlopen notes (freedesktop package-notes format), parsed from bytes and from a real
library that objcopy gives a ``.note.dlopen`` section."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from venvseal.elf.dlopen import NOTE_TYPE, DlopenEntry, dlopen_notes, parse_notes

LIBZ = Path("/usr/lib/x86_64-linux-gnu/libz.so.1")


def note(doc: object, *, kind: int = NOTE_TYPE, owner: bytes = b"FDO") -> bytes:
    """One ELF note as the linker lays it out: sizes, type, padded owner and descriptor."""
    name = owner + b"\0"
    desc = (json.dumps(doc).encode() if not isinstance(doc, bytes) else doc) + b"\0"
    return struct.pack("<III", len(name), len(desc), kind) + _pad(name) + _pad(desc)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


FEATURES = [{"feature": "sasl", "description": "SASL mechanisms", "priority": "recommended",
             "soname": ["libsasl2.so.2"]},
            {"feature": "idn", "priority": "required", "soname": ["libidn2.so.0", "libidn.so.12"]}]


@pytest.mark.parametrize(("data", "entries"), [
    (note(FEATURES), [DlopenEntry(("libsasl2.so.2",), "sasl", "recommended"),
                      DlopenEntry(("libidn2.so.0", "libidn.so.12"), "idn", "required")]),
    (note(FEATURES, kind=1) + note([FEATURES[0]]),  # a build-id-like note is skipped
     [DlopenEntry(("libsasl2.so.2",), "sasl", "recommended")]),
    (note(FEATURES, owner=b"GNU"), []),
    (note(b"{not json"), []),
    (note({"soname": ["x.so"]}), []),  # not an array
    (note([{"soname": []}, {"soname": "libx.so.1"}, {"feature": "none"}, 7]), []),
    (note([{"soname": ["libx.so.1"]}]), [DlopenEntry(("libx.so.1",))]),
    (b"", []),
    (b"\x04\x00", []),  # truncated
])
def test_notes(data: bytes, entries: list[DlopenEntry]) -> None:
    assert parse_notes(data) == entries


def with_note(tmp_path: Path, doc: object) -> Path:
    """A copy of the host's libz carrying a .note.dlopen section."""
    blob = tmp_path / "note.bin"
    blob.write_bytes(note(doc))
    lib = tmp_path / "libwithnote.so.1"
    objcopy = shutil.which("objcopy")
    assert objcopy is not None, "objcopy is missing (Debian package binutils)"
    subprocess.run([objcopy, "--add-section", f".note.dlopen={blob}",
                    "--set-section-flags", ".note.dlopen=alloc,readonly", str(LIBZ), str(lib)],
                   check=True)
    return lib


def test_a_real_library_with_a_note(tmp_path: Path) -> None:
    lib = with_note(tmp_path, FEATURES)
    assert [e.sonames for e in dlopen_notes(lib)] == [("libsasl2.so.2",),
                                                      ("libidn2.so.0", "libidn.so.12")]
    assert dlopen_notes(LIBZ) == []
    (tmp_path / "text").write_text("not ELF")
    assert dlopen_notes(tmp_path / "text") == []
