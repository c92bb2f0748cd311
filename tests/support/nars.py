"""NAR bytes made in memory from a small tree description, for crafted and generated archives.

A node is ``bytes`` (a regular file), ``Exe(bytes)`` (an executable file), ``Link(target)``
(a symlink) or a ``dict`` of names to nodes (a directory), serialised as Nix's ``dumpPath``
does (libutil/archive.cc): entries sorted byte-wise, strings zero-padded to 8 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exe:
    data: bytes


@dataclass(frozen=True)
class Link:
    target: str


Node = bytes | Exe | Link | dict[str, "Node"]


def string(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data + bytes(-len(data) % 8)


def strings(*items: bytes) -> bytes:
    return b"".join(string(i) for i in items)


def node(tree: Node) -> bytes:
    if isinstance(tree, bytes):
        return strings(b"(", b"type", b"regular", b"contents", tree, b")")
    if isinstance(tree, Exe):
        return strings(b"(", b"type", b"regular", b"executable", b"", b"contents", tree.data,
                       b")")
    if isinstance(tree, Link):
        return strings(b"(", b"type", b"symlink", b"target", tree.target.encode(), b")")
    body = b"".join(strings(b"entry", b"(", b"name", name.encode(), b"node") + node(child)
                    + string(b")")
                    for name, child in sorted(tree.items(), key=lambda kv: kv[0].encode()))
    return strings(b"(", b"type", b"directory") + body + string(b")")


def nar(tree: Node) -> bytes:
    """The NAR serialisation of ``tree``."""
    return string(b"nix-archive-1") + node(tree)


def file_header(size: int) -> bytes:
    """The start of a NAR holding one regular file of ``size`` bytes, up to its contents."""
    return string(b"nix-archive-1") + strings(b"(", b"type", b"regular", b"contents") + \
        size.to_bytes(8, "little")
