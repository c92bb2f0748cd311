"""Where a NAR stream goes: a fixed buffer handed on whole, to a writer or a hashing thread.

The walker in :mod:`venvseal.store.nar` fills the buffer; file contents are read straight
into it, so memory stays flat whatever the tree's size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable

# Bytes handed on at a time. Large enough that per-buffer costs (a queue hop, a hash update)
# vanish; small enough that a few of them keep peak memory far below the 64 MB budget.
BUFFER_SIZE = 1 << 20
# Buffers the hashing thread may hold while the walker fills the next one.
_BUFFERS_IN_FLIGHT = 8


class Sink:
    """Gathers the NAR stream in a fixed buffer and hands each full buffer to :meth:`_hand_on`."""

    def __init__(self) -> None:
        self._view = memoryview(bytearray(BUFFER_SIZE))
        self._pos = 0
        self._handed_on = 0
        # Shown each piece of file contents read into the buffer, in order (nar.Watch).
        self.on_piece: Callable[[memoryview], None] | None = None

    @property
    def size(self) -> int:
        """NAR bytes received so far."""
        return self._handed_on + self._pos

    def write(self, data: bytes) -> None:
        """Append framing (or a symlink target) to the stream."""
        pos = self._pos
        end = pos + len(data)
        if end > BUFFER_SIZE:
            self._write_across(data)
            return
        self._view[pos:end] = data
        self._pos = end

    def _write_across(self, data: bytes) -> None:
        """Slow path of :meth:`write`: ``data`` spans the end of the buffer."""
        offset = 0
        while offset < len(data):
            if self._pos == BUFFER_SIZE:
                self.flush()
            take = min(len(data) - offset, BUFFER_SIZE - self._pos)
            self._view[self._pos : self._pos + take] = data[offset : offset + take]
            self._pos += take
            offset += take

    def file(self, head: bytes, fd: int, size: int, tail: bytes) -> bool:
        """Append ``head``, ``size`` bytes read from ``fd``, then ``tail``; False if the file
        ended early. One call per file, with a fast path for the usual file that fits."""
        pos = self._pos
        start = pos + len(head)
        end = start + size
        if end + len(tail) <= BUFFER_SIZE:
            view = self._view
            view[pos:start] = head
            # Read straight into the buffer: no intermediate bytes object per file.
            got = os.readv(fd, (view[start:end],)) if size else 0
            if got and self.on_piece is not None:
                self.on_piece(view[start:start + got])
            if got == size:
                view[end : end + len(tail)] = tail
                self._pos = end + len(tail)
                return True
            self._pos = start + got  # a short read: let the general loop go on or give up
            size -= got
        else:
            self.write(head)
        if not self._read(fd, size):
            return False
        self.write(tail)
        return True

    def _read(self, fd: int, size: int) -> bool:
        """Append ``size`` bytes read from ``fd``, across buffers; False if the file ended."""
        remaining = size
        while remaining:
            pos = self._pos
            if pos == BUFFER_SIZE:
                self.flush()
                pos = 0
            n = os.readv(fd, (self._view[pos : pos + min(remaining, BUFFER_SIZE - pos)],))
            if not n:
                return False
            if self.on_piece is not None:
                self.on_piece(self._view[pos : pos + n])
            self._pos = pos + n
            remaining -= n
        return True

    def flush(self) -> None:
        """Hand on what the buffer holds and start filling an empty one."""
        if self._pos:
            self._handed_on += self._pos
            self._view = self._hand_on(self._view, self._pos)
            self._pos = 0

    def _hand_on(self, view: memoryview, length: int) -> memoryview:
        """Consume ``view[:length]``; return the buffer to fill next."""
        raise NotImplementedError


class WriteSink(Sink):
    """Sends the stream to a ``write`` callable as ``bytes`` chunks."""

    def __init__(self, write: Callable[[bytes | memoryview], object]) -> None:
        super().__init__()
        self._write = write

    def _hand_on(self, view: memoryview, length: int) -> memoryview:
        # A copy, so the caller may keep the chunk while this buffer is refilled.
        self._write(view[:length].tobytes())
        return view


class ThreadedHashSink(Sink):
    """Hashes full buffers on a worker thread while the walker fills the next one.

    Buffers cycle between a free queue and a full queue, so at most ``_BUFFERS_IN_FLIGHT + 1``
    exist and a slow hasher makes the walker wait rather than memory grow.
    """

    def __init__(self) -> None:
        super().__init__()
        self._hash = hashlib.sha256()
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._spare = _BUFFERS_IN_FLIGHT
        self._failure: BaseException | None = None

    def _hand_on(self, view: memoryview, length: int) -> memoryview:
        if self._thread is None:
            # Started on the first full buffer: a NAR that fits one buffer needs no thread.
            self._thread = threading.Thread(target=self._run, name="nar-hash", daemon=True)
            self._thread.start()
        self._full.put((view, length))
        if self._spare:
            self._spare -= 1
            return memoryview(bytearray(BUFFER_SIZE))
        return self._free.get()

    def _run(self) -> None:
        update = self._hash.update
        while (item := self._full.get()) is not None:
            view, length = item
            if self._failure is None:
                try:
                    update(view[:length])
                except BaseException as err:  # kept for finish(); the walker must not hang
                    self._failure = err
            self._free.put(view)

    def finish(self) -> bytes:
        """Hash what is left, stop the worker and return the digest."""
        if self._thread is not None:
            self._full.put(None)
            self._thread.join()
        if self._failure is not None:
            raise self._failure
        self._hash.update(self._view[: self._pos])
        return self._hash.digest()
