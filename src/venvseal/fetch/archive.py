"""Unpacking a downloaded archive (tar with any compression, or zip) safely.

Does not rely on tarfile's extraction filters (3.11.4+, and never for zip): every member is
checked before it is written. Refused (:class:`UnsafeMemberError`): absolute names, ``..``,
links pointing outside the output, writing through a link, and devices or fifos. Only the
executable bit of a mode is kept; owners and times are not restored (a NAR has neither).
:func:`check_links_inside` is the one check of a finished tree's links, for archives and
git checkouts alike.
"""

from __future__ import annotations

import functools
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from venvseal.fetch.errors import UnsafeMemberError

CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar", ".zip")
MemberKind = Literal["file", "dir", "symlink", "hardlink", "special"]
_ZIP_UNIX = 3  # ZipInfo.create_system of archives made on Unix: external_attr holds st_mode


@dataclass(frozen=True, slots=True)
class _Member:
    """One archive entry, read the same way from tar and zip."""

    name: str
    kind: MemberKind
    executable: bool = False
    link: str = ""  # a symlink's target, or the member a hard link repeats
    open: Callable[[], IO[bytes]] | None = None



def unpack(archive: Path, dest: Path) -> None:
    """Unpack a tar (any compression) or zip ``archive`` into the new folder ``dest``.

    UnsafeMemberError for a member that could write or point outside ``dest``.
    """
    dest.mkdir()
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zipped:
            _extract(_zip_members(zipped), dest)
    else:
        with tarfile.open(archive, "r:*") as tar:
            _extract(_tar_members(tar), dest)
    check_links_inside(dest)  # chains of links, only visible in the finished tree


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        if info.isreg():
            yield _Member(info.name, "file", bool(info.mode & 0o111), open=_tar_reader(tar, info))
        elif info.isdir():
            yield _Member(info.name, "dir")
        elif info.issym():
            yield _Member(info.name, "symlink", link=info.linkname)
        elif info.islnk():
            yield _Member(info.name, "hardlink", link=info.linkname)
        else:
            yield _Member(info.name, "special")


def _tar_reader(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def read() -> IO[bytes]:
        data = tar.extractfile(info)
        if data is None:
            raise tarfile.ReadError(f"no data for member {info.name!r}")
        return data

    return read


def _zip_members(zipped: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zipped.infolist():
        mode = info.external_attr >> 16 if info.create_system == _ZIP_UNIX else 0
        if info.is_dir() or stat.S_ISDIR(mode):
            yield _Member(info.filename, "dir")
        elif stat.S_ISLNK(mode):
            link = zipped.read(info).decode("utf-8", "surrogateescape")
            yield _Member(info.filename, "symlink", link=link)
        elif mode and not stat.S_ISREG(mode):  # a mode of 0 carries no type: a plain file
            yield _Member(info.filename, "special")
        else:
            yield _Member(info.filename, "file", bool(mode & 0o111),
                          open=functools.partial(zipped.open, info))


def _extract(members: Iterable[_Member], dest: Path) -> None:
    """Write ``members`` under ``dest``; a later entry replaces an earlier file or link."""
    for member in members:
        parts = _member_parts(member.name, member.name)
        if not parts:
            continue  # the archive's own root, "./"
        if member.kind == "special":
            raise UnsafeMemberError(member.name, "is a device, fifo or other special file")
        target = _parent(dest, parts, member) / parts[-1]
        if os.path.lexists(target):
            if not target.is_symlink() and target.is_dir():
                if member.kind == "dir":
                    continue
                raise UnsafeMemberError(member.name, "would replace a folder unpacked before")
            target.unlink()
        if member.kind == "dir":
            target.mkdir()
        elif member.kind == "symlink":
            _check_link(parts, member)
            os.symlink(member.link, target)
        elif member.kind == "hardlink":
            source = _hardlink_source(dest, member)
            shutil.copyfile(source, target)
            os.chmod(target, 0o755 if source.stat().st_mode & 0o111 else 0o644)
        else:
            _write_file(member, target)


def _member_parts(name: str, member: str) -> list[str]:
    """``name``'s path components; UnsafeMemberError if it is absolute or has ``..``."""
    if name.startswith("/"):
        raise UnsafeMemberError(member, f"has the absolute path {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeMemberError(member, f"has '..' in {name!r}, which leads outside the output")
    return parts


def _parent(dest: Path, parts: list[str], member: _Member) -> Path:
    """The folder ``member`` goes in, created as needed; never reached through a link."""
    path = dest
    for part in parts[:-1]:
        path = path / part
        if not os.path.lexists(path):
            path.mkdir()
        elif path.is_symlink() or not path.is_dir():
            what = "symlink" if path.is_symlink() else "file"
            raise UnsafeMemberError(member.name, f"would be written through the {what} "
                                    f"{path.relative_to(dest).as_posix()!r}")
    return path


def _check_link(parts: list[str], member: _Member) -> None:
    """Refuse a symlink whose target is absolute or climbs out of the output."""
    if not member.link or member.link.startswith("/"):
        raise UnsafeMemberError(member.name, f"is a symlink to {member.link!r}, outside the "
                                "output")
    resolved = posixpath.normpath(posixpath.join(*parts[:-1], member.link))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeMemberError(member.name, f"is a symlink to {member.link!r}, outside the "
                                "output")


def _hardlink_source(dest: Path, member: _Member) -> Path:
    """The file unpacked earlier that hard link ``member`` repeats (copied, not linked)."""
    path = dest
    for part in _member_parts(member.link, member.name):
        path = path / part
        if path.is_symlink():
            break
    if path.is_symlink() or not path.is_file():
        raise UnsafeMemberError(member.name, f"is a hard link to {member.link!r}, which is "
                                "not a file unpacked before it")
    return path


def _write_file(member: _Member, target: Path) -> None:
    if member.open is None:
        raise tarfile.ReadError(f"no data for member {member.name!r}")
    with member.open() as source, target.open("xb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)
    os.chmod(target, 0o755 if member.executable else 0o644)


def check_links_inside(root: Path) -> None:
    """Refuse any symlink in the tree ``root`` that is absolute or leads out of it.

    A link is judged by where it leads once every link on its way is followed
    (``a -> b/..`` with ``b -> ..`` leaves through two links that each look harmless).
    Absolute links are refused even when they point inside: the tree moves into the store.
    UnsafeMemberError names the first such link (sorted walk) and its target.
    """
    top = Path(os.path.realpath(root))
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(folder, name)
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            member = path.relative_to(root).as_posix()
            if target.startswith("/"):
                raise UnsafeMemberError(member, f"is a symlink to the absolute path {target!r}")
            # realpath, not Path.resolve: a link loop is harmless here, not an error.
            if not Path(os.path.realpath(path)).is_relative_to(top):
                lexical = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
                how = "" if lexical.split("/")[0] == ".." else " through other links"
                raise UnsafeMemberError(member, f"is a symlink to {target!r}, which leads "
                                        f"outside the tree{how}")
