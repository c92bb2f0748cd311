"""``venvseal.lock``: what a declared deps hash was declared with, and why it stopped matching.

A declared hash holds for one set of inputs. Some are in the project (uv.lock, the
pyproject.toml files, the recipe's ``[deps]``), others are on the machine: the toolchain's
packages, its interpreter, uv's version. ``--update-hash`` writes them all into
``venvseal.lock`` beside the recipe (committed with it; it names no package index), so a
later mismatch says which of them moved (``libpq-dev 15.18-0+deb12u1 -> 15.20-0+deb12u1``,
``uv.lock changed``) instead of leaving the user to find out.

The packages recorded: every one for a Debian toolchain (venvseal made the whole root), and
for a host root those a build reads (see :mod:`venvseal.deps.dpkg`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import tomllib
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Literal

from venvseal.deps import dpkg
from venvseal.deps.inputs import DepsInputs
from venvseal.errors import EXIT_USAGE, VenvsealError
from venvseal.hashes import Sha256
from venvseal.store.core import HashMismatchError, StorePath

LOCK_FILE = "venvseal.lock"
FORMAT = 1
# Differences listed one per line; past this many, a count says how many more.
MAX_LINES = 25
Scope = Literal["all", "build"]


class PinLockError(VenvsealError):
    """venvseal.lock cannot be read: bad input (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, kw_only=True, slots=True)
class DepsPins:
    """What one deps hash was declared with (the ``[deps]`` table of venvseal.lock)."""

    hash: str  # SRI
    toolchain: str  # the toolchain's identity (its package database and interpreter)
    python: str
    uv: str
    uv_lock: str  # sha256 of uv.lock
    settings: str  # digest of the recipe's [deps] settings, PATH and the interpreter's path
    scope: Scope  # which packages are recorded: "all", or those a "build" reads
    inputs: dict[str, str] = field(default_factory=dict)  # project files but uv.lock
    packages: dict[str, str] = field(default_factory=dict)  # name -> exact version


def lock_file(inputs: DepsInputs) -> Path:
    """venvseal.lock's place: beside the recipe."""
    return inputs.recipe.file.parent / LOCK_FILE


def current(inputs: DepsInputs, got: Sha256 | None = None) -> DepsPins:
    """The pins of this build, whose output hashed to ``got`` (if known)."""
    tc = inputs.toolchain
    installed = dpkg.installed(tc.root)
    scope: Scope = "all" if inputs.recipe.toolchain.debian is not None else "build"
    packages = installed if scope == "all" else dpkg.build_packages(installed)
    deps = {k: v for k, v in inputs.recipe.canonical("deps")["deps"].items() if k != "hash"}
    settings = {"deps": deps, "python": str(tc.python), "path": [str(p) for p in tc.path]}
    return DepsPins(
        hash=got.sri if got is not None else "", toolchain=tc.identity,
        python=str(tc.python), uv=tc.uv_version,
        uv_lock=inputs.lock.digest, settings=_digest(settings), scope=scope,
        inputs={rel: digest for rel, digest in inputs.files if rel != "uv.lock"},
        packages={name: pkg.version for name, pkg in sorted(packages.items())})


def _digest(value: object) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def read(file: Path) -> DepsPins | None:
    """The pins recorded in ``file``; None when there is no such file."""
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise PinLockError(f"{file}: cannot be read ({err}); delete it and rerun with "
                           "--update-hash, which writes it again") from err
    table = data.get("deps")
    if data.get("version") != FORMAT or not isinstance(table, dict):
        return None  # another venvseal's format: as if none, --update-hash rewrites it
    try:
        return DepsPins(
            hash=str(table["hash"]), toolchain=str(table["toolchain"]),
            python=str(table["python"]), uv=str(table["uv"]), uv_lock=str(table["uv-lock"]),
            settings=str(table["settings"]),
            scope="all" if table.get("packages-scope") == "all" else "build",
            inputs={str(k): str(v) for k, v in dict(table.get("inputs", {})).items()},
            packages={str(k): str(v) for k, v in dict(table.get("packages", {})).items()})
    except (KeyError, TypeError, ValueError) as err:
        raise PinLockError(f"{file}: [deps] is incomplete ({err}); delete it and rerun with "
                           "--update-hash, which writes it again") from err


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string


def render(pins: DepsPins, recipe_key: str) -> str:
    """venvseal.lock's text for ``pins`` (stable: sorted, one value a line)."""
    lines = [f"# What {recipe_key} was declared with: written by --update-hash (venvseal deps",
             "# or build), read when the hash no longer matches to say which input moved.",
             "# Commit it with the recipe.",
             f"version = {FORMAT}", "", "[deps]",
             f"hash = {_quote(pins.hash)}", f"toolchain = {_quote(pins.toolchain)}",
             f"python = {_quote(pins.python)}", f"uv = {_quote(pins.uv)}",
             f"uv-lock = {_quote(pins.uv_lock)}", f"settings = {_quote(pins.settings)}",
             f"packages-scope = {_quote(pins.scope)}", "", "[deps.inputs]"]
    lines += [f"{_quote(k)} = {_quote(v)}" for k, v in sorted(pins.inputs.items())]
    lines += ["", "[deps.packages]"]
    lines += [f"{_quote(k)} = {_quote(v)}" for k, v in sorted(pins.packages.items())]
    return "\n".join(lines) + "\n"


def write(file: Path, pins: DepsPins, recipe_key: str) -> None:
    """Write ``pins`` into ``file`` atomically, keeping the tables other than ``[deps]`` (a
    pinned Debian toolchain's ``[debian]``, venvseal.toolchain.debpin) as they are."""
    fd, temp = tempfile.mkstemp(dir=file.parent, prefix=".venvseal.lock-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render(pins, recipe_key) + _other_tables(file))
        os.chmod(temp, 0o644)
        os.replace(temp, file)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _other_tables(file: Path) -> str:
    """The TOML text of ``file``'s tables that are not this module's, or ""."""
    import tomlkit  # slow to import: only when venvseal.lock is written
    import tomlkit.exceptions

    try:
        doc = tomlkit.parse(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError):
        return ""  # none, or unreadable: read() says so when it matters
    for key in ("version", "deps"):
        doc.pop(key, None)
    kept = {k: v for k, v in doc.items() if isinstance(v, dict)}
    return "\n" + tomlkit.dumps(kept) if kept else ""


def toolchain_drift(recorded: DepsPins | None, now: DepsPins) -> tuple[str, ...]:
    """How the machine's toolchain differs from the recorded one: package versions, uv's
    version, the interpreter. Empty when they agree or nothing is recorded."""
    if recorded is None:
        return ()
    lines = list(_package_changes(recorded.packages, now.packages))
    if recorded.uv != now.uv:
        lines.append(f"uv {recorded.uv} -> {now.uv}")
    if recorded.python != now.python:
        lines.append(f"python {recorded.python} -> {now.python}")
    return tuple(lines)


def differences(recorded: DepsPins, now: DepsPins) -> tuple[str, ...]:
    """Every recorded input that differs now, one line each (toolchain first)."""
    lines = list(toolchain_drift(recorded, now))
    if recorded.toolchain != now.toolchain and not lines:
        lines.append(f"the toolchain changed (identity {recorded.toolchain[:12]} -> "
                     f"{now.toolchain[:12]}) in what venvseal.lock does not list: the "
                     "interpreter's bytes or a package outside the recorded ones")
    if recorded.uv_lock != now.uv_lock:
        lines.append("uv.lock changed")
    for rel in sorted(recorded.inputs.keys() | now.inputs.keys()):
        before, after = recorded.inputs.get(rel), now.inputs.get(rel)
        if before != after:
            lines.append(f"{rel} " + ("added" if before is None else
                                      "removed" if after is None else "changed"))
    if recorded.settings != now.settings:
        lines.append("the recipe's [deps] settings (env, exclude, extras, build-requires) or "
                     "the toolchain's python or path changed")
    return tuple(lines)


def _package_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        lines.append(f"{name} {old} removed" if new is None else
                     f"{name} {new} installed" if old is None else f"{name} {old} -> {new}")
    return lines


def shorten(lines: tuple[str, ...]) -> list[str]:
    """At most MAX_LINES lines, the rest counted."""
    if len(lines) <= MAX_LINES:
        return list(lines)
    return [*lines[:MAX_LINES - 1], f"and {len(lines) - MAX_LINES + 1} more"]


@dataclass(eq=False)
class DeclaredHashMismatchError(HashMismatchError):
    """The deps venv built now does not have the declared hash; says what moved and how to
    accept the new hash."""

    _: KW_ONLY
    recipe_file: Path
    key: str
    lock: Path
    changed: tuple[str, ...] | None  # None: no venvseal.lock to compare with

    def message(self) -> str:
        folder = self.recipe_file.parent
        if self.changed is None:
            why = [f"no {self.lock.name} beside the recipe records what {self.key} was "
                   "declared with, so what changed is not known"]
        elif self.changed:
            why = [f"what changed since {self.key} was declared ({self.lock}):",
                   *(f"  {line}" for line in shorten(self.changed))]
        else:
            why = [f"every input {self.lock} records is unchanged: the build is not "
                   f"reproducible; 'venvseal check {folder}' shows which files differ"]
        return (f"{self.recipe_file}: {self.key}: {self.mismatch}\n" + "\n".join(why) + "\n"
                f"if the new content is expected, accept it with 'venvseal deps --update-hash "
                f"{folder}' (or 'venvseal build --update-hash {folder}'), which rewrites "
                f"{self.key} and {self.lock.name}")


def _read_or_none(file: Path) -> DepsPins | None:
    try:
        return read(file)
    except PinLockError:
        return None


def _key(inputs: DepsInputs) -> str:
    return f"{inputs.recipe.key_prefix}deps.hash"


def record(inputs: DepsInputs, got: Sha256, *, pins: DepsPins | None = None) -> Path | None:
    """Write venvseal.lock for a deps hash declared as ``got``; its path if it changed.

    ``pins``: ``current(inputs)`` when the caller took it already (beside the build)."""
    file = lock_file(inputs)
    pins = current(inputs, got) if pins is None else replace(pins, hash=got.sri)
    if _read_or_none(file) == pins:  # an unreadable lock is simply replaced
        return None
    write(file, pins, _key(inputs))
    return file


def drift(inputs: DepsInputs) -> tuple[str, ...]:
    """How this machine's toolchain differs from the one venvseal.lock recorded (empty when
    it agrees, or nothing is recorded)."""
    return toolchain_drift(read(lock_file(inputs)), current(inputs))


def mismatch(inputs: DepsInputs, path: StorePath, declared: Sha256,
             got: Sha256) -> DeclaredHashMismatchError:
    """The error for a deps venv that hashed to ``got``, not to the ``declared`` hash."""
    file = lock_file(inputs)
    recorded = _read_or_none(file)  # the mismatch matters more than a damaged lock
    changed = None if recorded is None else differences(recorded, current(inputs, got))
    return DeclaredHashMismatchError(path, declared, got, recipe_file=inputs.recipe.file,
                                     key=_key(inputs), lock=file, changed=changed)
