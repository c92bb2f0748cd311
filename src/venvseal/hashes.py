"""sha256 digests and the three ways Nix writes them: SRI, nix32 and base16.

nix32 is Nix's own base-32: the alphabet omits e, o, u and t, and the digest is read from its
last byte to its first (libutil/hash.cc, ``printHash32``), so it is not RFC 4648 base32.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal, NewType

from venvseal.errors import HashFormatError

HashFormat = Literal["sri", "nix32", "base16"]
HASH_FORMATS: tuple[HashFormat, ...] = ("sri", "nix32", "base16")

NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
_NIX32_INDEX = {c: i for i, c in enumerate(NIX32_ALPHABET)}
SHA256_SIZE = 32

# A hash written as SRI, the canonical text form venvseal stores and prints.
SriHash = NewType("SriHash", str)


def nix32_encode(data: bytes) -> str:
    """Encode ``data`` in Nix's base-32 (52 characters for a sha256 digest)."""
    length = (len(data) * 8 - 1) // 5 + 1
    out = []
    for n in range(length - 1, -1, -1):
        bit = n * 5
        i, j = divmod(bit, 8)
        c = data[i] >> j
        if i + 1 < len(data):
            c |= data[i + 1] << (8 - j)
        out.append(NIX32_ALPHABET[c & 0x1F])
    return "".join(out)


def nix32_decode(text: str, size: int) -> bytes:
    """Decode Nix's base-32 into ``size`` bytes; raises ValueError on a bad digit or length."""
    if len(text) != (size * 8 - 1) // 5 + 1:
        raise ValueError(f"expected {(size * 8 - 1) // 5 + 1} nix32 digits, got {len(text)}")
    out = bytearray(size)
    for n, ch in enumerate(reversed(text)):
        digit = _NIX32_INDEX.get(ch)
        if digit is None:
            raise ValueError(f"{ch!r} is not a nix32 digit")
        bit = n * 5
        i, j = divmod(bit, 8)
        out[i] |= (digit << j) & 0xFF
        carry = digit >> (8 - j)
        if i + 1 < size:
            out[i + 1] |= carry
        elif carry:
            raise ValueError("nix32 value does not fit the digest size")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Sha256:
    """A sha256 digest, printable in every format Nix uses."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != SHA256_SIZE:
            raise ValueError(f"a sha256 digest has {SHA256_SIZE} bytes, not {len(self.digest)}")

    @property
    def sri(self) -> SriHash:
        return SriHash("sha256-" + base64.b64encode(self.digest).decode("ascii"))

    @property
    def nix32(self) -> str:
        return nix32_encode(self.digest)

    @property
    def base16(self) -> str:
        return self.digest.hex()

    def format(self, fmt: HashFormat) -> str:
        """The digest written in ``fmt``."""
        if fmt == "sri":
            return self.sri
        if fmt == "nix32":
            return self.nix32
        return self.base16

    def __str__(self) -> str:
        return self.sri


_SRI = re.compile(r"sha256-([A-Za-z0-9+/]{43}=)")
_PREFIXED = re.compile(r"sha256:([0-9a-z]+)")


def parse_sha256(text: str, where: str = "") -> Sha256:
    """Read a sha256 written as SRI, ``sha256:<nix32|base16>``, bare nix32 or bare base16.

    ``where`` names the file or key the text came from, for the error message.
    """
    body = text.strip()
    try:
        if m := _SRI.fullmatch(body):
            return Sha256(base64.b64decode(m.group(1), validate=True))
        if m := _PREFIXED.fullmatch(body):
            body = m.group(1)
        if len(body) == 2 * SHA256_SIZE:
            return Sha256(bytes.fromhex(body))
        if len(body) == 52:
            return Sha256(nix32_decode(body, SHA256_SIZE))
    except (ValueError, binascii.Error):
        pass
    raise HashFormatError(text, where)


def compress_hash(digest: bytes, size: int) -> bytes:
    """Fold ``digest`` to ``size`` bytes by XOR, as Nix does for store path digests."""
    out = bytearray(size)
    for i, b in enumerate(digest):
        out[i % size] ^= b
    return bytes(out)
