"""Debian's control-file syntax (deb822): the dpkg status file, ``Packages`` indexes, apt's
``.sources`` files. One reader for all three.
"""

from __future__ import annotations

from collections.abc import Iterator


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """Each paragraph as field -> value, field names lower-cased (they are case-insensitive),
    continuation lines joined to their field with newlines, ``#`` comment lines skipped."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields:
            yield fields
