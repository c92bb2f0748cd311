"""Pinned Debian toolchains: every ``.deb`` of a root, by name, version and sha256.

``venvseal toolchain --lock`` records what a ``[toolchain] debian`` root is made of in the
``[debian]`` table of ``venvseal.lock`` beside the recipe (committed with it). A pinned root is
then made from exactly those ``.deb`` files, whatever the mirror serves today, so a declared
hash made with it holds on every machine and every day. The lock names no host: each package
has its archive path (``pool/main/...``), joined to whichever mirror the machine's apt uses.

The sha256 of each ``.deb`` comes from the archive's ``Packages`` index, which apt verified
against the suite's signed ``Release`` file; the downloaded files are checked against it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvseal.errors import LocatedError
from venvseal.hashes import Sha256, parse_sha256
from venvseal.recipe.model import DebianSpec
from venvseal.toolchain.deb822 import stanzas

LOCK_NAME = "venvseal.lock"
TABLE = "debian"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_POOL = re.compile(r"pool/[A-Za-z0-9+.~_/:%-]+\.deb")


class PinError(LocatedError):
    """The toolchain lock is unreadable or does not fit the recipe (exit 2)."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True, slots=True)
class PinnedDeb:
    """One package of a pinned root, as the archive's signed index describes it."""

    name: str
    version: str
    architecture: str
    sha256: str  # hex, of the .deb file
    size: int
    filename: str  # the archive path, ``pool/main/...``, relative to any mirror

    @property
    def file_name(self) -> str:
        """The name the .deb has in the debs store path (apt's, with the epoch escaped)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


@dataclass(frozen=True, kw_only=True, slots=True)
class DebianPin:
    """What a Debian root is made of: the spec it was locked for, and every ``.deb``."""

    suite: str
    variant: str
    packages: tuple[str, ...]  # the recipe's package list, sorted
    debs_hash: Sha256  # NAR hash of the folder holding every .deb (a fixed-output path)
    debs: tuple[PinnedDeb, ...]  # sorted by name

    def fits(self, spec: DebianSpec) -> bool:
        """True if this pin was made for ``spec`` (suite, variant and package list)."""
        return (self.suite, self.variant, self.packages) == (
            spec.suite, spec.variant, tuple(sorted(spec.packages)))

    def fingerprint(self) -> str:
        """What names the pinned root's store path."""
        return json.dumps({"suite": self.suite, "variant": self.variant,
                           "packages": list(self.packages), "debs": self.debs_hash.sri},
                          sort_keys=True)

    def versions(self) -> dict[str, str]:
        return {d.name: d.version for d in self.debs}


def lock_path(recipe_file: Path) -> Path:
    """Where the lock of the recipe in ``recipe_file`` lives."""
    return recipe_file.parent / LOCK_NAME


def read_pin(lock_file: Path) -> DebianPin | None:
    """The ``[debian]`` table of ``lock_file``; None if the file or the table is absent."""
    import tomlkit  # slow to import: only for a Debian toolchain

    try:
        text = lock_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PinError(str(lock_file), f"cannot be read ({err.strerror})",
                       "check its permissions") from err
    try:
        data = tomlkit.parse(text).unwrap()
    except Exception as err:  # tomlkit raises several types; all mean "not TOML"
        raise PinError(str(lock_file), f"is not valid TOML ({err})",
                       "fix it, or remove it and run 'venvseal toolchain --lock'") from err
    table = data.get(TABLE)
    if table is None:
        return None
    return _pin_from(table, lock_file)


def _pin_from(table: Any, lock_file: Path) -> DebianPin:
    where = f"{lock_file}: [{TABLE}]"
    redo = "run 'venvseal toolchain --update-lock' to write it again"
    try:
        debs = tuple(sorted((_deb_from(d) for d in table["deb"]), key=lambda d: d.name))
        pin = DebianPin(suite=str(table["suite"]), variant=str(table["variant"]),
                        packages=tuple(sorted(str(p) for p in table["packages"])),
                        debs_hash=parse_sha256(str(table["debs-hash"])), debs=debs)
    except (KeyError, TypeError, ValueError) as err:
        raise PinError(where, f"is incomplete or malformed ({err!r})", redo) from err
    if len({d.name for d in debs}) != len(debs):
        raise PinError(where, "lists a package twice", redo)
    return pin


def _deb_from(item: Mapping[str, Any]) -> PinnedDeb:
    deb = PinnedDeb(name=str(item["name"]), version=str(item["version"]),
                    architecture=str(item["architecture"]), sha256=str(item["sha256"]),
                    size=int(item["size"]), filename=str(item["filename"]))
    if not _NAME.fullmatch(deb.name) or not _SHA256.fullmatch(deb.sha256):
        raise ValueError(f"package {deb.name!r}: bad name or sha256")
    if not _POOL.fullmatch(deb.filename) or ".." in deb.filename.split("/"):
        raise ValueError(f"package {deb.name}: filename {deb.filename!r} is not a pool path")
    return deb


def write_pin(lock_file: Path, pin: DebianPin) -> None:
    """Write ``pin`` as the ``[debian]`` table of ``lock_file``, keeping its other tables."""
    import tomlkit

    doc = tomlkit.parse(lock_file.read_text(encoding="utf-8")) if lock_file.exists() else (
        tomlkit.document())
    if not doc.body:
        doc.add(tomlkit.comment("Written by venvseal: what pinned inputs were declared with. "
                                "Commit it with the recipe."))
    table = tomlkit.table()
    table["suite"], table["variant"] = pin.suite, pin.variant
    table["packages"] = list(pin.packages)
    table["debs-hash"] = pin.debs_hash.sri
    debs = tomlkit.aot()
    for d in pin.debs:
        debs.append({"name": d.name, "version": d.version, "architecture": d.architecture,
                     "sha256": d.sha256, "size": d.size, "filename": d.filename})
    table["deb"] = debs
    doc[TABLE] = table
    temp = lock_file.with_name(f".{lock_file.name}.tmp")
    temp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    temp.replace(lock_file)


def pinned_debs(installed: Sequence[tuple[str, str, str]],
                indexes: Sequence[str]) -> tuple[PinnedDeb, ...]:
    """Each installed ``(name, version, architecture)`` with its index entry.

    ``indexes`` are the texts of the ``Packages`` files apt used. A package missing from
    them (installed from elsewhere) raises ValueError naming it.
    """
    known: dict[tuple[str, str, str], dict[str, str]] = {}
    for text in indexes:
        for f in stanzas(text):
            if "package" in f:
                known[(f["package"], f.get("version", ""), f.get("architecture", ""))] = f
    debs = []
    for name, version, arch in installed:
        entry = known.get((name, version, arch))
        if entry is None:
            raise ValueError(f"{name} {version} ({arch}) is in no Packages index apt used")
        debs.append(_deb_from({"name": name, "version": version, "architecture": arch,
                               "sha256": entry["sha256"], "size": entry["size"],
                               "filename": entry["filename"]}))
    return tuple(sorted(debs, key=lambda d: d.name))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
