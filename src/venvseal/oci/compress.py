"""Layer compression on every core, with the same bytes whatever the number of cores.

gzip (the default, what every runtime reads) is written as pigz does: the tar stream is cut
into :data:`CHUNK`-byte pieces at fixed offsets, each deflated on its own by a pool of
threads (zlib releases the GIL) with the previous piece's last 32 KiB as its dictionary,
ended with a sync flush (an empty stored block, so the next piece starts on a byte), and the
last ended with the final block. The pieces concatenate into one deflate stream (RFC 1951)
inside one gzip member (RFC 1952) whose CRC-32 and length cover the whole tar. What each
piece holds depends only on its offset, never on which thread ran it or when, so the output
is byte-for-byte the same with 1 or 64 workers; the dictionary keeps the ratio within a few
bytes per MiB of a single stream.

zstd (``[image] compression = "zstd"``) uses libzstd's own worker threads, whose output is
the same for any number of workers >= 1 (zstd's multi-threaded format is deterministic);
:mod:`zstandard` is imported only then.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal["gzip", "zstd"]
KINDS: tuple[Kind, ...] = ("gzip", "zstd")
CHUNK = 1 << 20  # bytes of tar per deflate piece (pigz: 128 KiB; bigger costs Python less)
WINDOW = 32 * 1024  # deflate's window: how much of the previous piece a piece may refer to
GZIP_LEVEL = 6  # gzip's and Go's default: docker's own choice; 9 saves ~2% for 2x the time
ZSTD_LEVEL = 3  # zstd's default; containerd and buildkit use it too
# RFC 1952 header: magic, deflate, no flags (no name), mtime 0, no extra flags, OS unknown
# (what Python's gzip module writes).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
MEDIA_TYPES: dict[Kind, str] = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
SUFFIXES: dict[Kind, str] = {"gzip": ".tar.gz", "zstd": ".tar.zst"}


class Sink(Protocol):
    """Where compressed bytes go (a file, through a hashing counter)."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Compression:
    """How layers are compressed; :meth:`key` names everything that changes their bytes."""

    kind: Kind = "gzip"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.kind]

    def key(self) -> dict[str, object]:
        """The settings and library versions the compressed bytes depend on."""
        if self.kind == "zstd":
            import zstandard  # only zstd images need it

            return {"kind": "zstd", "level": ZSTD_LEVEL, "zstd": zstandard.ZSTD_VERSION}
        return {"kind": "gzip", "level": GZIP_LEVEL, "chunk": CHUNK, "window": WINDOW,
                "zlib": zlib.ZLIB_RUNTIME_VERSION}


class Compressor(Protocol):
    """A write-only stream of tar bytes that writes their compressed form to a sink."""

    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


def open_compressor(compression: Compression, sink: Sink, *, pool: Executor,
                    workers: int) -> Compressor:
    """A compressor writing to ``sink``; gzip pieces run on ``pool`` (``workers`` threads)."""
    if compression.kind == "zstd":
        return ZstdCompressor(sink, workers=workers)
    return ParallelGzip(sink, pool=pool, in_flight=2 * workers)


def _deflate(piece: bytes, dictionary: bytes, last: bool) -> bytes:
    """One piece as raw deflate, sync-flushed (or finished, for the last)."""
    # Raw deflate (negative window bits): the gzip header and trailer are written around it.
    extra = (dictionary,) if dictionary else ()
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY,
                                *extra)
    return deflater.compress(piece) + deflater.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzip:
    """One gzip member made of independently deflated pieces (see the module docstring)."""

    def __init__(self, sink: Sink, *, pool: Executor, in_flight: int) -> None:
        self._sink, self._pool, self._limit = sink, pool, max(1, in_flight)
        self._buffer = bytearray()
        self._pending: deque[Future[bytes]] = deque()
        self._dictionary = b""
        self._crc = 0
        self._size = 0
        sink.write(GZIP_HEADER)

    def write(self, data: bytes, /) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            piece = bytes(self._buffer[:CHUNK])
            del self._buffer[:CHUNK]
            self._submit(piece, last=False)
        return len(data)

    def _submit(self, piece: bytes, *, last: bool) -> None:
        self._crc = zlib.crc32(piece, self._crc)
        self._size += len(piece)
        self._pending.append(self._pool.submit(_deflate, piece, self._dictionary, last))
        self._dictionary = piece[-WINDOW:]
        # Bounded memory: wait for the oldest piece once enough are queued.
        while len(self._pending) > self._limit:
            self._sink.write(self._pending.popleft().result())

    def close(self) -> None:
        """Deflate what is left as the last piece, then write the pieces and the trailer."""
        self._submit(bytes(self._buffer), last=True)
        self._buffer.clear()
        while self._pending:
            self._sink.write(self._pending.popleft().result())
        # RFC 1952 trailer: CRC-32 and length (mod 2^32) of the uncompressed data.
        self._sink.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


class ZstdCompressor:
    """A zstd frame written by libzstd's worker threads (at least one: see the docstring)."""

    def __init__(self, sink: Sink, *, workers: int) -> None:
        import zstandard  # lazily: only zstd images need the C extension

        context = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=max(1, workers),
                                           write_checksum=False, write_content_size=False)
        flushable: Any = _Flushable(sink)
        self._writer: Any = context.stream_writer(flushable, closefd=False)

    def write(self, data: bytes, /) -> int:
        self._writer.write(data)
        return len(data)

    def close(self) -> None:
        self._writer.close()


class _Flushable:
    """``sink`` with the ``flush`` zstandard's stream writer calls."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, data: bytes, /) -> int:
        self._sink.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass
