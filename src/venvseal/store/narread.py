"""Reading a NAR back into a tree: the inverse of :func:`venvseal.nar.dump_nar`.

The stream comes from elsewhere (a registry, a file someone handed us), so it is parsed
strictly and treated as hostile until it has been read to the end:

- only the canonical form Nix writes is accepted (libutil/archive.cc, ``parseDump``): the
  magic, the tokens in their one order, zero padding, and directory entries in strictly
  increasing byte order (so no duplicates), as ``dumpPath`` emits them;
- names are single path components: no ``/``, no NUL, not ``.``, ``..`` or empty, at most
  NAME_MAX bytes; symlink targets have no NUL and at most PATH_MAX bytes; framing tokens are
  short. A length past its bound is refused before anything is read or allocated;
- nothing may follow the archive;
- with a :class:`~venvseal.store.linkcheck.LinkRule` (a path from a cache), every symlink
  target is checked before the link is made: no absolute link or ``..`` out of the path
  except into the store paths it declares as references.

Entries are created relative to their parent's directory descriptor with ``O_NOFOLLOW`` and
``O_EXCL``, so a name can never lead outside ``dest`` whatever the stream says. Every byte
read is hashed on the way, so the result carries the NAR hash without a second pass over the
tree; because only the canonical form is accepted, that hash is also the tree's NAR hash.
On any error ``dest`` is removed: a malformed archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from venvseal import fsutil
from venvseal.errors import PathError
from venvseal.hashes import Sha256
from venvseal.store.linkcheck import LinkRule, link_problem
from venvseal.store.nar import BUFFER_SIZE, NarResult

Read = Callable[[int], bytes]

MAGIC = b"nix-archive-1"
NAME_MAX = 255  # bytes in one file name (Linux NAME_MAX)
TARGET_MAX = 4095  # bytes in a symlink target (Linux PATH_MAX less the NUL)
TOKEN_MAX = 16  # the longest framing token, "nix-archive-1", is 13 bytes
DEPTH_MAX = 256  # nested directories: far past real trees; keeps open fds few and clean-up
# in reach (shutil.rmtree, which removes a failed restore, recurses once per level)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(eq=False)
class NarFormatError(PathError):
    """A NAR stream is truncated, malformed or hostile; nothing was left at ``path``."""

    offset: int  # in the stream, where the problem was found

    template = ("cannot restore the NAR archive into {path}: {problem} (at byte {offset}); the "
                "archive is damaged or was not made by Nix or venvseal, so nothing was "
                "restored; fetch it again or build the path instead")


class _Malformed(Exception):
    """Raised inside the parser; turned into NarFormatError with the destination."""


class _Stream:
    """Exact reads from ``read``, buffered, hashed and counted.

    ``read`` is asked for whole chunks, each hashed as it arrives: per-token hashing and
    reading would cost more than the rest of the restore. Bytes read past the archive's
    end are hashed too, but then the archive is refused anyway (:meth:`at_end`).
    """

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buf = b""
        self._pos = 0
        self._total = 0  # bytes received from ``read``
        self.sha = hashlib.sha256()

    @property
    def offset(self) -> int:
        """Bytes of the archive consumed so far."""
        return self._total - (len(self._buf) - self._pos)

    def _fill(self) -> bool:
        """Replace the consumed buffer with the next chunk; False at the stream's end."""
        chunk = self._read(BUFFER_SIZE)
        if not chunk:
            return False
        self.sha.update(chunk)
        self._total += len(chunk)
        self._buf = self._buf[self._pos:] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
        return True

    def exact(self, n: int) -> bytes:
        """``n`` bytes; _Malformed if the stream ends first."""
        end = self._pos + n
        while end > len(self._buf):
            if not self._fill():
                raise _Malformed(f"the archive ends early ({end - len(self._buf)} more bytes "
                                 "expected)")
            end = self._pos + n
        data = self._buf[self._pos:end]
        self._pos = end
        return data

    def copy_to(self, fd: int, n: int) -> None:
        """Write the next ``n`` bytes to ``fd`` without gathering them first."""
        while n:
            if self._pos == len(self._buf) and not self._fill():
                raise _Malformed(f"the archive ends early ({n} more bytes expected)")
            take = min(n, len(self._buf) - self._pos)
            view = memoryview(self._buf)[self._pos:self._pos + take]
            while view:
                view = view[os.write(fd, view):]
            self._pos += take
            n -= take

    def at_end(self) -> bool:
        return self._pos == len(self._buf) and not self._fill()

    def u64(self) -> int:
        return int.from_bytes(self.exact(8), "little")

    def padding(self, length: int) -> None:
        # NAR format: strings are zero-padded to a multiple of 8 bytes.
        if (pad := -length % 8) and self.exact(pad) != bytes(pad):
            raise _Malformed("padding bytes are not zero")

    def string(self, limit: int, what: str) -> bytes:
        """One NAR string of at most ``limit`` bytes (checked before reading it)."""
        length = self.u64()
        if length > limit:
            raise _Malformed(f"{what} is {length} bytes long, more than the {limit} allowed")
        data = self.exact(length)
        self.padding(length)
        return data

    def token(self) -> bytes:
        return self.string(TOKEN_MAX, "a framing token")

    def expect(self, token: bytes) -> None:
        # Fast path: the framed token (length, bytes, padding) is compared in one slice.
        framed = _FRAMED.get(token) or _frame(token)
        end = self._pos + len(framed)
        if end <= len(self._buf) and self._buf[self._pos:end] == framed:
            self._pos = end
        elif (got := self.token()) != token:
            raise _Malformed(f"expected {token.decode()!r}, found {_show(got)}")


def _frame(token: bytes) -> bytes:
    return len(token).to_bytes(8, "little") + token + bytes(-len(token) % 8)


_FRAMED = {t: _frame(t) for t in (b"(", b")", b"type", b"entry", b"name", b"node", b"target",
                                  b"contents", b"", MAGIC)}


def _show(data: bytes) -> str:
    return repr(data.decode("utf-8", "backslashreplace"))


def restore_nar(read: Read | BinaryIO, dest: Path, *,
                links: LinkRule | None = None) -> NarResult:
    """Recreate at ``dest`` (which must not exist) the tree serialised by the NAR ``read``.

    ``read`` is a ``read(n)`` callable or a binary file object. Regular files (with the
    executable bit), symlinks and directories are made, owned by the caller with modes 0o644,
    0o755 (executable files and directories); sealing is the store's job. Returns the NAR's
    sha256, size and file count, the same as :func:`venvseal.nar.nar_hash` of the result.
    Raises :class:`NarFormatError` (``dest`` removed) for a damaged or hostile archive,
    including a symlink ``links`` refuses.
    """
    reader: Read = read if callable(read) else read.read
    stream = _Stream(reader)
    dest = Path(os.path.abspath(dest))
    if os.path.lexists(dest):
        raise NarFormatError(dest, "the destination exists already", 0)
    parent_fd = os.open(dest.parent, _DIR_FLAGS)
    try:
        files = _restore(stream, parent_fd, os.fsencode(dest.name), links)
        if not stream.at_end():
            raise _Malformed("data follows the end of the archive")
    except _Malformed as err:
        fsutil.remove_tree(dest)
        raise NarFormatError(dest, str(err), stream.offset) from None
    except BaseException:
        fsutil.remove_tree(dest)
        raise
    finally:
        os.close(parent_fd)
    return NarResult(hash=Sha256(stream.sha.digest()), size=stream.offset, files=files)


def _restore(stream: _Stream, parent_fd: int, name: bytes, links: LinkRule | None) -> int:
    """Parse the archive into ``name`` under ``parent_fd``; the number of files and symlinks.

    Iterative: one (directory fd, last entry name) per open directory, so depth costs no
    Python stack, and the fds are closed whatever happens.
    """
    stream.expect(MAGIC)
    files = 0
    stack: list[tuple[int, bytes]] = []
    try:
        files += _node(stream, parent_fd, name, stack, links)
        while stack:
            dir_fd, last = stack[-1]
            token = stream.token()
            if token == b")":  # the directory's node ends, then the entry that held it
                os.close(stack.pop()[0])
                if stack:
                    stream.expect(b")")
                continue
            if token != b"entry":
                raise _Malformed(f"expected 'entry' or ')' in a directory, found {_show(token)}")
            stream.expect(b"(")
            stream.expect(b"name")
            entry = _entry_name(stream, last)
            stack[-1] = (dir_fd, entry)
            stream.expect(b"node")
            if len(stack) >= DEPTH_MAX:
                raise _Malformed(f"directories are nested more than {DEPTH_MAX} deep")
            files += _node(stream, dir_fd, entry, stack, links)
            if stack[-1][0] == dir_fd:  # not a directory: its entry ends here
                stream.expect(b")")
    finally:
        for dir_fd, _ in stack:
            os.close(dir_fd)
    return files


def _entry_name(stream: _Stream, last: bytes) -> bytes:
    """A directory entry's name, checked to be one safe component, after ``last``."""
    name = stream.string(NAME_MAX, "an entry name")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise _Malformed(f"entry name {_show(name)} is not a plain file name")
    # NAR format: entries are sorted byte-wise and unique (dumpPath's std::map order).
    if last and name <= last:
        raise _Malformed(f"entry {_show(name)} is out of order or repeated after {_show(last)}")
    return name


def _node(stream: _Stream, dir_fd: int, name: bytes, stack: list[tuple[int, bytes]],
          links: LinkRule | None) -> int:
    """Create one node ``name`` in ``dir_fd``; a directory is pushed on ``stack`` open.

    Regular files and symlinks are read to their closing ``)``; a directory's entries are
    read by the caller's loop. Returns 1 for a file or symlink, 0 for a directory.
    """
    stream.expect(b"(")
    stream.expect(b"type")
    kind = stream.token()
    if kind == b"regular":
        _regular(stream, dir_fd, name)
    elif kind == b"symlink":
        stream.expect(b"target")
        target = stream.string(TARGET_MAX, "a symlink target")
        if not target or b"\0" in target:
            raise _Malformed(f"symlink target {_show(target)} is empty or holds a NUL byte")
        if links is not None:
            _check_link(links, stack, target)
        os.symlink(target, name, dir_fd=dir_fd)
    elif kind == b"directory":
        os.mkdir(name, 0o755, dir_fd=dir_fd)
        stack.append((os.open(name, _DIR_FLAGS, dir_fd=dir_fd), b""))
        return 0
    else:
        raise _Malformed(f"unknown node type {_show(kind)}")
    stream.expect(b")")
    return 1


def _check_link(links: LinkRule, stack: list[tuple[int, bytes]], target: bytes) -> None:
    """Refuse a symlink ``links`` does not allow; ``stack`` names the folders to it."""
    where = PurePosixPath(*(os.fsdecode(entry) for _, entry in stack))
    if (problem := link_problem(links, where, os.fsdecode(target))) is not None:
        raise _Malformed(f"symlink {_show(os.fsencode(str(where)))} -> {_show(target)} is "
                         f"refused: {problem}")


def _regular(stream: _Stream, dir_fd: int, name: bytes) -> None:
    """A regular file: ``["executable" ""] "contents" <bytes>``, copied in chunks."""
    token = stream.token()
    executable = token == b"executable"
    if executable:
        stream.expect(b"")
        token = stream.token()
    if token != b"contents":
        raise _Malformed(f"expected 'contents' in a regular file, found {_show(token)}")
    size = stream.u64()
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        stream.copy_to(fd, size)
        # Explicit modes, not umask's: the executable bit is part of the NAR hash.
        os.fchmod(fd, 0o755 if executable else 0o644)
    finally:
        os.close(fd)
    stream.padding(size)

