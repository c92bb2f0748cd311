"""Generic file-tree helpers: sealing a tree read-only, removing it, locks and atomic writes.

Nothing here knows about the store's layout; :mod:`venvseal.store` composes these pieces.
Walks are iterative (no recursion limit) and never follow symlinks.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

# Modes of a sealed tree, as Nix's canonicalisePathMetaData: r-x dirs, r-- or r-x files.
SEALED_DIR = 0o555
SEALED_FILE = 0o444
SEALED_EXECUTABLE = 0o555


def temp_name(prefix: str) -> str:
    """``prefix~<pid>~<random>``: unique per process and call, and parseable back to ``prefix``."""
    return f"{prefix}~{os.getpid()}~{secrets.token_hex(4)}"


def seal_tree(root: Path, *, mtime: int) -> None:
    """Make ``root`` canonical: every mtime (and atime) ``mtime`` seconds, read-only modes.

    Dirs become 0o555, files 0o444 or 0o555 when the owner may execute them; setuid, setgid
    and sticky bits go. Symlinks keep their (ignored) mode and get the time only. A file with
    other hard links is copied first, so sealing never changes a file outside the tree (uv,
    for one, hard-links installed files to its cache), unless it is sealed already: the
    assembly stage hard-links files from the deps store path, which sealing must not copy.
    Other file types are left alone:
    the NAR hash that follows rejects them by name.
    """
    times = (mtime * 1_000_000_000, mtime * 1_000_000_000)
    dirs: list[str] = []  # pre-order: every dir comes before its subdirs
    pending = [os.fspath(root)]
    while pending:
        path = pending.pop()
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            _seal(path, 0o700, (st.st_atime_ns, st.st_mtime_ns))  # list, relink
            with os.scandir(path) as it:
                pending.extend(entry.path for entry in it)
            dirs.append(path)
        elif stat.S_ISREG(st.st_mode):
            executable = st.st_mode & stat.S_IXUSR
            mode = SEALED_EXECUTABLE if executable else SEALED_FILE
            if stat.S_IMODE(st.st_mode) == mode and st.st_mtime_ns == times[1]:
                continue  # already sealed (a hard link into another store path): leave it
            if st.st_nlink > 1:
                _unshare(path)
            _seal(path, mode, times)
        elif stat.S_ISLNK(st.st_mode):
            os.utime(path, ns=times, follow_symlinks=False)
    # Children before parents, so sealing a child never touches a sealed parent's mtime.
    for path in reversed(dirs):
        _seal(path, SEALED_DIR, times)


def _unshare(path: str) -> None:
    """Replace the hard-linked file ``path`` with a private copy of it."""
    copy_over(Path(path), Path(path))


_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def copy_over(source: Path, dest: Path, *, writable: bool = False) -> None:
    """Replace ``dest`` atomically with a copy of the regular file ``source``: a new inode
    with ``source``'s mode and times (plus owner write with ``writable``), so nothing that
    shared ``dest``'s old inode by hard link changes.

    Nothing is followed: ``source`` and the folder of ``dest`` are opened no-follow (a
    symlink there is an OSError, ELOOP or ENOTDIR), the copy is made and renamed relative to
    that folder's descriptor, and its mode set through its own descriptor; so a symlink
    planted at either path can never make this write or chmod a file elsewhere.
    """
    src = os.open(source, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(source))
        folder = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        try:
            temp = temp_name(dest.name)
            out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600,
                          dir_fd=folder)
            try:
                _copy_fd(src, out, st.st_size)
                os.fchmod(out, stat.S_IMODE(st.st_mode) | (0o200 if writable else 0))
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
            try:
                os.replace(temp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                os.unlink(temp, dir_fd=folder)
                raise
        finally:
            os.close(folder)
    finally:
        os.close(src)


def _copy_fd(src: int, out: int, size: int) -> None:
    """Copy ``size`` bytes from ``src`` to ``out`` in the kernel (copy_file_range reflinks
    where the file system can), falling back to a read/write loop."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, out, size - done)
            if n == 0:
                break
            done += n
    except OSError:
        os.lseek(src, done, os.SEEK_SET)
        os.lseek(out, done, os.SEEK_SET)
        while chunk := os.read(src, 1 << 20):
            os.write(out, chunk)


def _seal(path: str, mode: int, times: tuple[int, int]) -> None:
    """chmod and touch ``path`` without following a symlink: if one was put at ``path``
    since it was looked at, this fails (glibc's fchmodat refuses a link with
    AT_SYMLINK_NOFOLLOW; Python raises NotImplementedError) rather than change its target."""
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except NotImplementedError:
        raise OSError(errno.ELOOP, "is a symlink, not sealed", path) from None
    os.utime(path, ns=times, follow_symlinks=False)


def make_private(path: Path) -> Path:
    """Make ``path`` a writable file of its own (breaking any hard link) before editing it.

    Root may write read-only files, so a hard link into a sealed store path must be broken,
    never written through.
    """
    copy_over(path, path, writable=True)
    return path


def make_tree_writable(root: Path) -> None:
    """Give the owner rwx on every directory under ``root``, so its entries can be removed."""
    pending = [os.fspath(root)]
    while pending:
        path = pending.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        with os.scandir(path) as it:
            pending.extend(e.path for e in it if e.is_dir(follow_symlinks=False))


def remove_tree(path: Path) -> None:
    """Remove ``path`` (file, symlink or read-only tree) if it exists."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        make_tree_writable(path)
        shutil.rmtree(path)
    else:
        os.unlink(path)


def disk_usage(root: Path) -> int:
    """Bytes ``root`` occupies on disk (st_blocks * 512, hard links counted once), like du."""
    seen: set[tuple[int, int]] = set()
    total = 0
    pending = [os.fspath(root)]
    while pending:
        path = pending.pop()
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as it:
                pending.extend(entry.path for entry in it)
    return total


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty file of the file system holding ``path`` to disk, in one call.

    Linux syncfs(2); elsewhere sync(2), which flushes every file system.
    """
    if sys.platform != "linux":
        os.sync()
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if int(libc.syncfs(fd)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fspath(path))
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, temp: Path) -> None:
    """Write ``path`` whole or not at all: the durable file ``temp``, renamed to ``path``.

    ``temp`` must not exist and must be on the same file system as ``path``.
    """
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        remove_tree(temp)
        raise
    fsync_dir(path.parent)


def replace_symlink(link: Path, target: str, *, hidden_prefix: str = ".") -> None:
    """Point the symlink ``link`` at ``target`` atomically (a temp symlink beside it, renamed)."""
    temp = link.parent / temp_name(f"{hidden_prefix}{link.name}")
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        remove_tree(temp)
        raise


def try_lock_file(path: Path, *, shared: bool) -> int | None:
    """flock ``path`` (created if missing) if no other open file holds a conflicting lock.

    The returned fd holds the lock until closed; None if the lock is taken.
    """
    return _lock(path, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)


def lock_file(path: Path, *, shared: bool) -> int:
    """flock ``path`` (created if missing), waiting as long as it takes; the fd holds the lock."""
    fd = _lock(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    assert fd is not None  # only a non-blocking flock gives up
    return fd


def _lock(path: Path, operation: int) -> int | None:
    """flock(``operation``) on ``path``; None if non-blocking and taken.

    After locking, the fd must still name ``path``'s file: whoever deletes a lock file does so
    while holding it, and a waiter that then locked the deleted inode opens the path again.
    """
    while True:
        # Read-only: flock needs no write access, so a lock file another user created
        # (root, in a user's store) still locks for everyone who can read it.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, operation)
            held = os.fstat(fd)
            current = os.stat(path)
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)


def unlink_locked(path: Path, fd: int) -> None:
    """Delete the lock file ``path`` whose lock ``fd`` holds, then release it."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def is_disk_full(err: OSError) -> bool:
    """True when ``err`` says the file system or the user's quota is out of space."""
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def link_tree(source: Path, dest: Path, *, skip: tuple[str, ...] = ()) -> None:
    """Recreate ``source`` at ``dest``: folders made, symlinks copied, files hard-linked
    (copied when linking fails, e.g. across file systems). ``skip`` names top-level entries
    left out."""
    def place(src: str, dst: Path) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst, follow_symlinks=False)

    _recreate(source, dest, skip, place)


def clone_tree(source: Path, dest: Path, *, skip: tuple[str, ...] = ()) -> None:
    """Recreate ``source`` at ``dest`` as :func:`link_tree` does, but every file a copy of
    its own (shared blocks where the file system can reflink, copy_file_range): the two
    trees share no inode, so a change to one (a repair, a chmod) never reaches the other."""
    def place(src: str, dst: Path) -> None:
        fd = os.open(src, os.O_RDONLY | _NOFOLLOW)
        try:
            st = os.fstat(fd)
            out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            try:
                _copy_fd(fd, out, st.st_size)
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
        finally:
            os.close(fd)

    _recreate(source, dest, skip, place)


def _recreate(source: Path, dest: Path, skip: tuple[str, ...],
              place: Callable[[str, Path], None]) -> None:
    for dirpath, dirnames, filenames in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        target = dest if rel == "." else dest / rel
        os.mkdir(target)
        for name in sorted(dirnames + filenames):
            src, dst = os.path.join(dirpath, name), target / name
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
                if name in dirnames:
                    dirnames.remove(name)
            elif name in filenames:
                place(src, dst)


def unsealed(root: Path, *, mtime: int) -> list[str]:
    """Entries under ``root`` (relative, sorted) that are no longer as :func:`seal_tree` left
    them: a different mtime or mode. Writing a file changes its mtime, so this names what
    was edited in a store path, cheaply (an lstat per entry, no hashing)."""
    times = mtime * 1_000_000_000
    file_modes = (SEALED_FILE, SEALED_EXECUTABLE)
    changed: list[str] = []
    pending = [(os.fspath(root), "")]
    while pending:
        path, rel = pending.pop()
        with os.scandir(path) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                name = f"{rel}{entry.name}"
                if stat.S_ISDIR(st.st_mode):
                    pending.append((entry.path, name + "/"))
                    ok = stat.S_IMODE(st.st_mode) == SEALED_DIR
                elif stat.S_ISLNK(st.st_mode):
                    ok = st.st_mtime_ns == times
                else:
                    ok = st.st_mtime_ns == times and stat.S_IMODE(st.st_mode) in file_modes
                if not ok:
                    changed.append(name)
    return sorted(changed)
