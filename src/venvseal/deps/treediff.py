"""Where two builds of the same inputs differ, described well enough to find the cause.

Used by ``venvseal check``: for each differing file it says what differs (kind, size, mode,
symlink target, the ELF sections whose bytes differ, or the first differing line of text).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from venvseal.elf.buildid import is_elf


@dataclass(frozen=True, slots=True)
class Difference:
    """One path that differs between the two trees, and how."""

    path: str  # relative to the tree roots
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def _walk(root: Path) -> Iterator[str]:
    """Every entry below ``root`` as a sorted relative path (symlinks not followed)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            names = sorted(e.name for e in it)
        for name in reversed(names):
            child = f"{rel}/{name}" if rel else name
            yield child
            if (root / child).is_dir() and not (root / child).is_symlink():
                stack.append(child)


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "directory" if stat.S_ISDIR(st.st_mode) else "file"


def _sections(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        return {s.name: hashlib.sha256(s.data()).hexdigest() for s in elf.iter_sections()
                if s.header.sh_type != "SHT_NOBITS"}


def _elf_difference(a: Path, b: Path) -> str:
    try:
        sa, sb = _sections(a), _sections(b)
    except (ELFError, OSError) as err:
        return f"ELF files differ (cannot read sections: {err})"
    names = sorted(set(sa) | set(sb))
    diff = [n for n in names if sa.get(n) != sb.get(n)]
    if not diff:
        return "ELF files differ outside their sections (headers or padding)"
    return "ELF sections differ: " + ", ".join(diff)


def _text_difference(da: bytes, db: bytes) -> str:
    la, lb = da.splitlines(), db.splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False), start=1):
        if x != y:
            return (f"line {i} differs: {x[:120].decode('utf-8', 'replace')!r} vs "
                    f"{y[:120].decode('utf-8', 'replace')!r}")
    return f"one has {len(la)} lines, the other {len(lb)}"


def _file_difference(a: Path, b: Path, sta: os.stat_result, stb: os.stat_result) -> str | None:
    parts = []
    if (sta.st_mode & 0o111 != 0) != (stb.st_mode & 0o111 != 0):
        parts.append("executable bit differs")
    if sta.st_size != stb.st_size:
        parts.append(f"size {sta.st_size} vs {stb.st_size}")
    if _same_content(a, b):
        return "; ".join(parts) or None
    if is_elf(a) and is_elf(b):
        parts.append(_elf_difference(a, b))
    else:
        da, db = a.read_bytes(), b.read_bytes()
        if b"\0" in da[:8192] or b"\0" in db[:8192]:
            first = next((i for i, (x, y) in enumerate(zip(da, db, strict=False)) if x != y),
                         min(len(da), len(db)))
            parts.append(f"binary content differs from byte {first}")
        else:
            parts.append(_text_difference(da, db))
    return "; ".join(parts)


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def compare_trees(a: Path, b: Path) -> list[Difference]:
    """Every difference between trees ``a`` and ``b`` that a NAR hash would see, sorted."""
    left, right = set(_walk(a)), set(_walk(b))
    out = [Difference(p, "only in the first build") for p in left - right]
    out += [Difference(p, "only in the second build") for p in right - left]
    for rel in sorted(left & right):
        pa, pb = a / rel, b / rel
        sta, stb = pa.lstat(), pb.lstat()
        if _kind(sta) != _kind(stb):
            out.append(Difference(rel, f"{_kind(sta)} vs {_kind(stb)}"))
        elif stat.S_ISLNK(sta.st_mode):
            ta, tb = os.readlink(pa), os.readlink(pb)
            if ta != tb:
                out.append(Difference(rel, f"symlink target {ta!r} vs {tb!r}"))
        elif stat.S_ISREG(sta.st_mode) and (what := _file_difference(pa, pb, sta, stb)):
            out.append(Difference(rel, what))
    return sorted(out, key=lambda d: d.path)
