"""The RECORD of each installed distribution kept true to what is on disk.

A dist-info's RECORD lists every file with its hash and size (binary distribution format,
"The RECORD file"). The deps stage and the assembly edit and delete installed files; these
bring each RECORD in line afterwards, keeping every other byte of it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterator
from pathlib import Path


def update_records(venv: Path, removed: Collection[Path],
                   changed: Collection[Path]) -> frozenset[Path]:
    """Bring every dist-info RECORD in line with the files; return those rewritten (relative).

    Lines of removed files are dropped; lines of changed files get a fresh hash and size.
    Every other byte (line order, quoting, line endings, RECORD's own line) is kept.
    """
    removed_keys = {os.path.normpath(p) for p in removed}
    changed_keys = {os.path.normpath(p) for p in changed}
    rewritten = set()
    for record in find_records(venv):
        old = record.read_bytes().decode("utf-8")
        new = fix_record(record, old, removed_keys, changed_keys)
        if new != old:
            # Replace rather than write in place: a RECORD may be a hard link into another
            # store path (the assembly stage links the deps venv), which must not change.
            temp = record.with_name(".RECORD.venvseal-tmp")
            temp.write_bytes(new.encode("utf-8"))
            os.replace(temp, record)
            rewritten.add(record.relative_to(venv))
    return frozenset(rewritten)


# Where installers put dist-info folders: a venv's site-packages, and the top of a --target
# folder (the deps stage's build environment). Globbing these is much faster than walking
# a 31,000-file venv, which matters because RECORDs are updated after every change.
RECORD_GLOBS = ("lib/python*/site-packages/*.dist-info/RECORD", "*.dist-info/RECORD",
                "*/*.dist-info/RECORD")


def find_records(venv: Path) -> list[Path]:
    """Every ``*.dist-info/RECORD`` an installer put in ``venv``, sorted; symlinked folders
    (``lib64 -> lib``) are not followed."""
    found = set()
    for pattern in RECORD_GLOBS:
        for record in venv.glob(pattern):
            rel = record.relative_to(venv).parts
            if not any((venv.joinpath(*rel[:i])).is_symlink() for i in range(1, len(rel))) \
                    and stat.S_ISREG(_lstat_mode(record)):
                found.add(record)
    return sorted(found)


def _lstat_mode(path: Path) -> int:
    try:
        return path.lstat().st_mode
    except FileNotFoundError:
        return 0


def fix_record(record: Path, text: str, removed: set[str], changed: set[str]) -> str:
    """The RECORD ``text`` with removed files' lines dropped and changed files' lines rehashed.

    ``removed`` and ``changed`` hold normalised absolute paths; RECORD paths are relative to
    the directory holding the ``.dist-info`` (``../../../bin/x`` for scripts).
    """
    base = os.fspath(record.parent.parent)
    own = os.path.normpath(record)
    out = []
    for line, row in parse_rows(text):
        target = target_of(base, row[0]) if row else ""
        if target in removed:
            continue
        if target in changed and target != own and len(row) == 3:
            line = _rehashed(line, row[1], Path(target))
        out.append(line)
    return "".join(out)


def target_of(base: str, path: str) -> str:
    """The normalised absolute path a RECORD row names (``base``: the dist-info's parent).
    Strings, not Path objects: these were half the time of a RECORD update."""
    return os.path.normpath(os.path.join(base, path))


def parse_rows(text: str) -> Iterator[tuple[str, list[str]]]:
    """Each CSV row of ``text`` with its exact source text (a quoted field may span lines)."""
    physical = re.findall(r"[^\n]*\n|[^\n]+\Z", text)
    reader = csv.reader(iter(physical))
    consumed = 0
    for row in reader:
        yield "".join(physical[consumed:reader.line_num]), row
        consumed = reader.line_num


def _rehashed(line: str, old_hash: str, path: Path) -> str:
    """``line`` with its hash and size fields recomputed for ``path``, path field untouched.

    Hash and size never need CSV quoting (urlsafe base64 and digits), so the last two
    comma-separated fields are replaced textually and the path keeps its original quoting.
    """
    body = line.rstrip("\r\n")
    ending = line[len(body):]
    path_field = body.rsplit(",", 2)[0]
    algorithm = old_hash.partition("=")[0] or "sha256"
    if algorithm not in hashlib.algorithms_guaranteed or algorithm.startswith("shake"):
        algorithm = "sha256"
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, algorithm).digest()
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return f"{path_field},{algorithm}={encoded},{path.stat().st_size}{ending}"
