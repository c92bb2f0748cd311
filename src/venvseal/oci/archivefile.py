"""An image archive file, written whole or, after an app edit, only from what changed.

The archive is a tar of *members* in a fixed order, the ones that change least first (see
:func:`venvseal.oci.archive.write_archive`): its bytes follow from the member list alone
(names, sizes, contents), so an archive whose first members are the same as the new one's
holds, up to the first member that differs, exactly the bytes a full write would write.

Every archive written with a *ledger* (a folder of the store's, never beside the user's
file) is recorded there: the file's identity (device, inode, size, modification and change
times in ns) and its member list (name, size, sha256). The next write to the same path
reuses the old file's prefix when all of these hold, and otherwise writes the whole archive:

- the path names a regular file (not a symlink), with one link (a hard link elsewhere would
  be changed too), owned by this user, mode 0644, whose identity is the one recorded (any
  write, chmod, link or replacement since changes the change time, the inode or the size;
  one within the file clock's tick of our own rename may not, but only this user or root
  may write the file at all, and either could change the archive after us anyway);
- the old file is opened without following links and is the same inode as the one checked;
- no other process has it open (a ``docker load`` reading it): a write lease is granted;
- the tar header of every kept member is where the member list puts it.

The old file is then renamed to this process's ``.NAME.<pid>.tmp`` (flock'ed, as a full
write's temp file), cut after the last kept member, the rest appended, fsync'ed and renamed
into place. The path holds the old archive, then none, then the new one, never a partial
file: a crash in between leaves the temp file, which the next write beside it removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import stat
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from venvseal.oci.layers import ImageError, tar_header

LEDGER_VERSION = 1  # bump whenever the same members would give other bytes
MODE = 0o644
_ZEROS = bytes(tarfile.RECORDSIZE)


@dataclass(frozen=True, slots=True)
class Member:
    """One tar member: a folder (no digest), bytes, or a file's first ``size`` bytes."""

    name: str
    size: int
    digest: str  # sha256 of the bytes, "sha256:<hex>" ("" for a folder)
    data: bytes | Path | None

    @classmethod
    def folder(cls, name: str) -> Member:
        return cls(name, 0, "", None)

    @classmethod
    def of_bytes(cls, name: str, data: bytes) -> Member:
        return cls(name, len(data), "sha256:" + hashlib.sha256(data).hexdigest(), data)

    @property
    def key(self) -> tuple[str, int, str]:
        """What the member's bytes in the archive follow from."""
        return (self.name, self.size, self.digest)

    def header(self) -> bytes:
        info = (tar_header(self.name, "dir", 0o755) if not self.digest
                else tar_header(self.name, "file", MODE, size=self.size))
        return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def offsets(members: Sequence[Member]) -> list[int]:
    """Where each member's header starts, then where the tar's end blocks start."""
    found = [0]
    for m in members:
        found.append(found[-1] + len(m.header()) + m.size + (-m.size % tarfile.BLOCKSIZE))
    return found


def archive_size(members: Sequence[Member]) -> int:
    """The size of the tar of ``members``."""
    return _end(offsets(members)[-1])


def archive_size_of(keys: Sequence[tuple[str, int, str]]) -> int:
    """The size of the tar of members known by their keys (a ledger's record)."""
    return archive_size([Member(n, s, d, None) for n, s, d in keys])


def _end(at: int) -> int:
    end = at + 2 * tarfile.BLOCKSIZE
    return end + (-end % tarfile.RECORDSIZE)


def write_tar(out: Path, members: Sequence[Member], *, ledger: Path | None = None) -> int:
    """Write the tar of ``members`` at ``out`` atomically; its size. With ``ledger``, reuse
    the prefix of an archive written there before (see the module's docstring) and record
    the new one."""
    record = ledger / _ledger_name(out) if ledger is not None else None
    folder = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_stale_temps(out)
        with _target(folder, out.name, _read_record(record, out), members) as (fd, tmp, start):
            if record is not None:
                with suppress(OSError):  # the file changes from here on
                    record.unlink(missing_ok=True)
            at = offsets(members)[start]
            os.ftruncate(fd, at)
            writer = _TarWriter(fd, at)
            for member in members[start:]:
                writer.member(member)
            writer.close()
            if record is not None:  # the record vouches for these bytes
                os.fsync(fd)
            os.fchmod(fd, MODE)
            os.replace(tmp, out.name, src_dir_fd=folder, dst_dir_fd=folder)
            if record is not None:
                os.fsync(folder)
            st = os.fstat(fd)
            if record is not None:
                with suppress(OSError):  # a read-only store: the next write is whole
                    _write_record(record, out, st, members)
            return st.st_size
    finally:
        os.close(folder)


@contextmanager
def _target(folder: int, name: str, old: _Record | None,
            members: Sequence[Member]) -> Iterator[tuple[int, str, int]]:
    """``(fd, temp name, members kept)``: the old archive moved to the temp name if it can be
    trusted and keeps members, else a new empty temp file; the temp file is flock'ed, and
    removed at the end unless renamed."""
    tmp = f".{name}.{os.getpid()}.tmp"
    found = _reusable(folder, name, tmp, old, members) if old is not None else None
    if found is None:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        # O_EXCL | O_NOFOLLOW: never through a link someone put at the temp file's name.
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=folder)
        found = (fd, 0)
    fd, kept = found
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd, tmp, kept
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)  # gone already after the rename
        os.close(fd)


class _TarWriter:
    """A tar as :mod:`tarfile` writes it (PAX), with file data copied by the kernel."""

    def __init__(self, fd: int, offset: int = 0) -> None:
        self._fd = fd
        self._offset = offset
        os.lseek(fd, offset, os.SEEK_SET)

    def _write(self, data: bytes) -> None:
        self._write_raw(data)
        self._offset += len(data)

    def _write_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def member(self, member: Member) -> None:
        self._write(member.header())
        if isinstance(member.data, bytes):
            self._write(member.data)
        elif member.data is not None:
            self._copy(member.data, member.size)
        self._write(bytes(-member.size % tarfile.BLOCKSIZE))

    def _copy(self, source: Path, size: int) -> None:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            left = size
            while left:
                try:
                    done = os.copy_file_range(fd, self._fd, left)
                except OSError:  # another file system, or no support: copy in user space
                    data = os.read(fd, min(left, 1 << 20))
                    done = len(data)
                    self._write_raw(data)
                if done == 0:
                    raise ImageError(f"{source} ended after {size - left} of {size} bytes; "
                                     "did it change while the archive was written? run again")
                left -= done
        finally:
            os.close(fd)
        self._offset += size

    def close(self) -> None:
        # tarfile's end: two zero blocks, then zeros up to a whole record.
        end = self._offset + 2 * tarfile.BLOCKSIZE
        self._write(_ZEROS[: 2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE)])


# Reusing the old file ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    """What the ledger says of the archive venvseal last wrote at a path."""

    identity: tuple[int, ...]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
    members: tuple[tuple[str, int, str], ...]  # Member.key of each


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _reusable(folder: int, name: str, tmp: str, old: _Record,
              members: Sequence[Member]) -> tuple[int, int] | None:
    """The old archive ``name``, moved to ``tmp`` and open, and how many of ``members`` it
    keeps; None if it cannot be trusted (see the module's docstring) or keeps none."""
    same = 0
    while same < min(len(old.members), len(members)) and old.members[same] == members[same].key:
        same += 1
    if same == 0:
        return None
    try:  # never opened if not a regular file (a FIFO, a device); checked again once open
        if not stat.S_ISREG(os.lstat(name, dir_fd=folder).st_mode):
            return None
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=folder)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (_trusted(st, old) and _headers_match(fd, members[:same])):
            raise _NotReused
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _NotReused from None  # another writer's
        if not _alone(fd):
            raise _NotReused
        os.replace(name, tmp, src_dir_fd=folder, dst_dir_fd=folder)
        if _identity(os.lstat(tmp, dir_fd=folder))[:2] != _identity(st)[:2]:
            # Swapped in between: not what we checked; it is moved away, as a full write
            # would replace it.
            os.unlink(tmp, dir_fd=folder)
            raise _NotReused
    except (_NotReused, OSError):
        os.close(fd)
        return None
    return fd, same


class _NotReused(Exception):
    """The old archive is not to be trusted: write the whole archive."""


def _trusted(st: os.stat_result, old: _Record) -> bool:
    """Whether the open old file is the one recorded, unchanged since, ours alone."""
    return (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) == MODE and _identity(st) == old.identity
            and st.st_size == archive_size_of(old.members))


def _alone(fd: int) -> bool:
    """Whether nothing else has the file open (a ``docker load`` still reading the old
    archive would see it change under it): only then is a write lease granted (fcntl(2)).
    It is let go at once; an open in between is told with SIGURG, ignored by default, rather
    than SIGIO, which would end the process. No leases on this file system: not alone."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


def _headers_match(fd: int, kept: Sequence[Member]) -> bool:
    """Whether each kept member's tar header is where the member list puts it."""
    for member, at in zip(kept, offsets(kept), strict=False):
        header = member.header()
        if os.pread(fd, len(header), at) != header:
            return False
    return True


# The ledger -------------------------------------------------------------------------------


def _ledger_name(out: Path) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(out))).hexdigest()[:32] + ".json"


def _read_record(record: Path | None, out: Path) -> _Record | None:
    """The ledger's record of the archive at ``out``, if there is a well-formed one."""
    if record is None:
        return None
    try:
        doc = json.loads(record.read_bytes())
        ident, members = doc["identity"], doc["members"]
        if (doc["version"] != LEDGER_VERSION or doc["path"] != os.path.abspath(out)
                or len(ident) != 5 or not all(type(i) is int for i in ident)):
            return None
        kept = tuple((n, s, d) for n, s, d in members
                     if type(n) is str and type(s) is int and type(d) is str)
        if len(kept) != len(members):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _Record(tuple(ident), kept)


def _write_record(record: Path, out: Path, st: os.stat_result,
                  members: Sequence[Member]) -> None:
    record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"version": LEDGER_VERSION, "path": os.path.abspath(out),
           "identity": list(_identity(st)), "members": [list(m.key) for m in members]}
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, record)


# Temp files -------------------------------------------------------------------------------


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove ``.NAME.<pid>.tmp`` files beside ``out`` that no live process holds."""
    removed = []
    prefix = f".{out.name}."
    for entry in os.scandir(out.parent):
        rest = entry.name.removeprefix(prefix)
        if (rest == entry.name or not rest.endswith(".tmp")
                or not rest.removesuffix(".tmp").isdigit() or not entry.is_file()):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        else:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        finally:
            os.close(fd)
    return removed
