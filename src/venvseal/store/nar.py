"""Nix ARchive (NAR) serialisation and its sha256, streamed in constant memory.

A NAR is the canonical byte stream Nix hashes to give a directory tree its content address
(``nix-hash --type sha256 PATH``). The format (Nix libutil/archive.cc, ``dumpPath``):

- every string is a u64 little-endian length, the bytes, then zero padding to a multiple of 8;
- the archive is ``"nix-archive-1"`` then one node;
- a node is ``"(" "type"`` then one of
  ``"regular" ["executable" ""] "contents" <bytes>`` (``"executable"`` when S_IXUSR is set),
  ``"symlink" "target" <target>``, or
  ``"directory"`` followed, for each entry in byte-wise name order, by
  ``"entry" "(" "name" <name> "node" <node> ")"``; and the node ends with ``")"``.

Nothing else is recorded: no times, owners, or permissions beyond the user-execute bit.
Symlinks are never followed. Names are handled as bytes so non-UTF-8 names hash exactly, and
sorted as bytes, as Nix's ``std::map<std::string, ...>`` does.

One walker (:func:`_serialise`) produces the stream; a sink decides where it goes. File
contents are read straight into a fixed buffer, which is handed on whole, so memory stays flat
whatever the tree's size. :func:`nar_hash` hashes full buffers on a second thread: hashlib
releases the GIL for large updates, so hashing overlaps the walk and the reads.
"""

from __future__ import annotations

import operator
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from venvseal import fsutil
from venvseal.errors import EXIT_USAGE, LocatedError, UsageError
from venvseal.hashes import Sha256
from venvseal.store.narseal import Sealer
from venvseal.store.narsink import BUFFER_SIZE as BUFFER_SIZE
from venvseal.store.narsink import Sink as _Sink
from venvseal.store.narsink import ThreadedHashSink as _ThreadedHashSink
from venvseal.store.narsink import WriteSink as _WriteSink

# O_NOFOLLOW: never follow a symlink swapped in after listing; O_NONBLOCK: never hang on a
# fifo swapped in after listing (fstat then rejects it).
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BY_NAME = operator.attrgetter("name")

# NAR format: strings are padded with zeros to a multiple of 8 bytes (archive.cc writePadding).
_PADDING = tuple(bytes(-n % 8) for n in range(8))


def _string(data: bytes) -> bytes:
    """One NAR string: u64 little-endian length, ``data``, zero padding to 8 bytes."""
    return len(data).to_bytes(8, "little") + data + _PADDING[len(data) & 7]


# The fixed framing, computed once so the hot loop only concatenates a few constants.
_MAGIC = _string(b"nix-archive-1")
_CLOSE = _string(b")")
_NODE_TYPE = _string(b"(") + _string(b"type")
_REGULAR = _NODE_TYPE + _string(b"regular") + _string(b"contents")
_EXECUTABLE = (
    _NODE_TYPE + _string(b"regular") + _string(b"executable") + _string(b"") + _string(b"contents")
)
_SYMLINK = _NODE_TYPE + _string(b"symlink") + _string(b"target")
_DIRECTORY = _NODE_TYPE + _string(b"directory")
_ENTRY_NAME = _string(b"entry") + _string(b"(") + _string(b"name")
_NODE = _string(b"node")
# What follows a file's contents, by contents length mod 8: the padding, then the end of the
# file's node and, in a directory, of the entry holding it.
_Tails = tuple[bytes, ...]
_ENTRY_FILE_END: _Tails = tuple(pad + _CLOSE + _CLOSE for pad in _PADDING)
_ROOT_FILE_END: _Tails = tuple(pad + _CLOSE for pad in _PADDING)


class Watch(Protocol):
    """Sees what the walk reads, so another reader need not read it again (for example
    :class:`venvseal.elf.refs.Spotter`, looking for build paths while the deps are hashed)."""

    def file(self, path: bytes) -> None:
        """A regular file's contents follow, as :meth:`piece` calls, in order."""

    def piece(self, data: memoryview) -> None:
        """The next piece of the current file's contents (valid during the call only)."""

    def link(self, path: bytes, target: bytes) -> None:
        """A symlink and its target."""


class NarError(LocatedError):
    """A file cannot be put into a NAR; names the file and what to do."""


class NarPathNotFoundError(NarError, UsageError):
    """The path asked for does not exist (exit 2: the input named on the command line is wrong)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class NarResult:
    """What hashing a path produced."""

    hash: Sha256  # sha256 of the NAR serialisation
    size: int  # number of NAR bytes
    files: int  # regular files + symlinks seen
    sealed: bool = False  # the tree was sealed as it was hashed (``seal_mtime``)


def nar_hash(
    path: str | os.PathLike[str], *, progress: Callable[[int], None] | None = None,
    seal_mtime: int | None = None, watch: Watch | None = None,
) -> NarResult:
    """The sha256 of ``path``'s NAR serialisation, as ``nix-hash --type sha256`` computes it.

    ``progress(nbytes)`` is called after each regular file with that file's size. With
    ``seal_mtime``, the tree is also sealed as :func:`venvseal.fsutil.seal_tree` seals it, in
    the same walk, but for its top folder's owner write bit (see :mod:`venvseal.store.narseal`).
    ``watch`` is shown every file's contents and every symlink's target as they are read.
    Raises :class:`NarPathNotFoundError` if ``path`` does not exist and :class:`NarError` for a
    file that cannot be archived (device, socket, fifo, unreadable, changed while read).
    """
    sealer = None if seal_mtime is None else Sealer(seal_mtime)
    try:
        return _hash(path, progress, sealer, watch)
    except NarError as err:
        if sealer is None or not isinstance(err.__cause__, PermissionError):
            raise
    # An entry the owner may not read or list: seal_tree opens up folders as it goes, and
    # then every entry is readable (the walk seals nothing twice).
    fsutil.seal_tree(Path(os.fsdecode(path)), mtime=sealer.mtime)
    return _hash(path, progress, sealer, watch)


def _hash(path: str | os.PathLike[str], progress: Callable[[int], None] | None,
          sealer: Sealer | None, watch: Watch | None = None) -> NarResult:
    sink = _ThreadedHashSink()
    if watch is not None:
        sink.on_piece = watch.piece
    try:
        files = _serialise(os.fsencode(path), sink, progress, sealer, watch)
    finally:
        digest = sink.finish()
    return NarResult(hash=Sha256(digest), size=sink.size, files=files,
                     sealed=sealer is not None)


def dump_nar(path: str | os.PathLike[str], write: Callable[[bytes | memoryview], object]) -> None:
    """Send ``path``'s NAR serialisation to ``write``, in chunks of at most ``BUFFER_SIZE``.

    Each chunk is a fresh ``bytes`` object the caller may keep. Raises as :func:`nar_hash`.
    """
    sink = _WriteSink(write)
    _serialise(os.fsencode(path), sink, None, None)
    sink.flush()


def _show(path: bytes) -> str:
    """``path`` for a message; bytes that are not UTF-8 are shown as ``\\xNN``."""
    return path.decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    """A word for a file type NAR cannot hold."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (fifo)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    return f"a special file (mode {mode:o})"


def _unsupported(path: bytes, mode: int) -> NarError:
    return NarError(
        _show(path),
        f"is {_kind(mode)}, which a NAR cannot hold (only files, directories and symlinks)",
        "remove it from the tree or exclude it before hashing",
    )


def _os_error(path: bytes, err: OSError) -> NarError:
    """Wrap an OSError met while reading ``path``."""
    if isinstance(err, FileNotFoundError):
        return NarError(
            _show(path),
            "vanished while being read",
            "make sure nothing else writes to the tree while it is hashed, then retry",
        )
    if isinstance(err, PermissionError):
        return NarError(
            _show(path),
            "cannot be read (permission denied)",
            "make it readable (chmod u+r, or u+rx for a directory) and retry",
        )
    return NarError(_show(path), f"cannot be read ({err.strerror or err})", "check the file system")


def _serialise(root: bytes, sink: _Sink, progress: Callable[[int], None] | None,
               sealer: Sealer | None, watch: Watch | None = None) -> int:
    """Write the NAR of ``root`` to ``sink``; return the number of files and symlinks."""
    try:
        st = os.lstat(root)
    except (FileNotFoundError, NotADirectoryError):
        raise NarPathNotFoundError(
            _show(root), "does not exist", "check the path, or build it first"
        ) from None
    except OSError as err:
        raise _os_error(root, err) from err
    sink.write(_MAGIC)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        sink.write(_DIRECTORY)
        files = _serialise_directory(root, sink, progress, sealer, watch)
        sink.write(_CLOSE)
        return files
    if stat.S_ISLNK(mode):
        target = _readlink(root, None, root)
        sink.write(_SYMLINK + _string(target) + _CLOSE)
        if watch is not None:
            watch.link(root, target)
        if sealer is not None:
            _sealing(sealer.symlink, root, root, None)
        return 1
    if not stat.S_ISREG(mode):
        raise _unsupported(root, mode)
    size = _regular(root, None, root, sink, b"", _ROOT_FILE_END, sealer, watch)
    if progress is not None:
        progress(size)
    return 1


def _serialise_directory(root: bytes, sink: _Sink, progress: Callable[[int], None] | None,
                         sealer: Sealer | None, watch: Watch | None = None) -> int:
    """Write the entries of directory ``root`` (not its node framing); return files seen.

    Iterative, so depth costs no Python stack: one sorted listing and one directory file
    descriptor per level being walked. Files are opened relative to that descriptor, which
    spares the kernel a walk of the whole path for each file.
    """
    write = sink.write
    files = 0
    stack: list[tuple[Iterator[os.DirEntry[bytes]], int, bytes]] = []
    try:
        stack.append((_listing(root), _open_directory(root, None, root), root))
        while stack:
            entries, dir_fd, here = stack[-1]
            for entry in entries:
                name = entry.name
                n = len(name)
                head = b"".join(
                    (_ENTRY_NAME, n.to_bytes(8, "little"), name, _PADDING[n & 7], _NODE)
                )
                # d_type from readdir answers these without a stat call (lstat only if unknown).
                if entry.is_file(follow_symlinks=False):
                    files += 1
                    size = _regular(name, dir_fd, entry.path, sink, head, _ENTRY_FILE_END,
                                    sealer, watch)
                    if progress is not None:
                        progress(size)
                elif entry.is_dir(follow_symlinks=False):
                    write(head + _DIRECTORY)
                    # Listed first: if the open then fails, no descriptor is left behind.
                    stack.append((_listing(entry.path), _open_directory(name, dir_fd, entry.path),
                                  entry.path))
                    break
                elif entry.is_symlink():
                    files += 1
                    target = _readlink(name, dir_fd, entry.path)
                    write(head + _SYMLINK + _string(target) + _CLOSE + _CLOSE)
                    if watch is not None:
                        watch.link(entry.path, target)
                    if sealer is not None:
                        _sealing(sealer.symlink, entry.path, name, dir_fd)
                else:
                    raise _unsupported(entry.path, _lstat_mode(entry))
            else:
                if sealer is not None:  # after its entries, as seal_tree does
                    _sealing(lambda fd: sealer.directory(fd, top=len(stack) == 1), here, dir_fd)
                os.close(stack.pop()[1])
                # End of this directory's node, and of the entry holding it unless it is the root.
                if stack:
                    write(_CLOSE + _CLOSE)
    finally:
        for _, dir_fd, _ in stack:
            os.close(dir_fd)
    return files


def _open_directory(name: bytes, dir_fd: int | None, path: bytes) -> int:
    """A descriptor for directory ``name`` (relative to ``dir_fd``), for relative opens."""
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        raise _os_error(path, err) from err


def _listing(path: bytes) -> Iterator[os.DirEntry[bytes]]:
    """The entries of directory ``path``, in NAR (byte-wise name) order."""
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=_BY_NAME)
    except OSError as err:
        raise _os_error(path, err) from err
    return iter(entries)


def _lstat_mode(entry: os.DirEntry[bytes]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mode
    except OSError as err:
        raise _os_error(entry.path, err) from err


def _readlink(name: bytes, dir_fd: int | None, path: bytes) -> bytes:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as err:
        raise _os_error(path, err) from err


def _sealing(seal: Callable[..., None], path: bytes, *args: object) -> None:
    """Call ``seal(*args)``, an OSError becoming a NarError naming ``path``."""
    try:
        seal(*args)
    except OSError as err:
        raise _os_error(path, err) from err


def _regular(
    name: bytes, dir_fd: int | None, path: bytes, sink: _Sink, head: bytes, tails: _Tails,
    sealer: Sealer | None = None, watch: Watch | None = None,
) -> int:
    """Write a regular-file node for ``name``, between ``head`` and ``tails``; return its size.

    ``path`` is only for messages. Size and mode come from ``fstat`` on the open file, so they
    describe what is read even if the file was replaced since the directory was listed.
    """
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        raise _os_error(path, err) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unsupported(path, st.st_mode)
        size = st.st_size
        # NAR format: "executable" is written when the owner may execute (S_IXUSR), nothing else.
        frame = _EXECUTABLE if st.st_mode & stat.S_IXUSR else _REGULAR
        head = b"".join((head, frame, size.to_bytes(8, "little")))
        if watch is not None:
            watch.file(path)
        complete = sink.file(head, fd, size, tails[size & 7])
        if complete and sealer is not None:
            sealer.file(fd, st, name, dir_fd, path)
    except OSError as err:
        raise _os_error(path, err) from err
    finally:
        os.close(fd)
    if not complete:
        raise NarError(
            _show(path),
            "shrank while being read",
            "make sure nothing else writes to the tree while it is hashed, then retry",
        )
    return size
