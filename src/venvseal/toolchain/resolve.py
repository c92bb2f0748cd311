"""Where Python and the system libraries come from: a root file system on the host.

The recipe names a root (the host's ``/`` by default, or a folder) and paths inside it. The
toolchain's identity, the digest of what is installed in it, is part of every cache key, so a
changed library or interpreter rebuilds what depends on it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from venvseal.errors import EXIT_USAGE, VenvsealError
from venvseal.recipe.model import Toolchain
from venvseal.toolchain.sandbox import ROOT_ENTRIES

# Debian's package database: one file that changes whenever any package does.
DPKG_STATUS = PurePosixPath("/var/lib/dpkg/status")
MAX_LINKS = 40


class ToolchainError(VenvsealError):
    """The recipe's toolchain root or interpreter cannot be used: bad input (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, kw_only=True, slots=True)
class ResolvedToolchain:
    """A toolchain ready for the sandbox: host root, paths inside it, and its identity."""

    root: Path
    python: PurePosixPath
    library_dirs: tuple[PurePosixPath, ...]
    path: tuple[PurePosixPath, ...]
    identity: str  # sha256 hex of the package database and the interpreter
    uv_version: str


def resolve_in_root(root: Path, path: PurePosixPath) -> Path:
    """The host path ``path`` (inside ``root``) names, following symlinks as if root were /."""
    parts = list(path.parts[1:])
    current = PurePosixPath("/")
    hops = 0
    while parts:
        current = current / parts.pop(0)
        host = root / str(current).lstrip("/")
        if host.is_symlink():
            hops += 1
            if hops > MAX_LINKS:
                raise ToolchainError(f"{path} in toolchain root {root}: too many symlinks")
            target = PurePosixPath(os.readlink(host))
            base = target if target.is_absolute() else current.parent / target
            parts = list(base.parts[1:]) + parts
            current = PurePosixPath("/")
    return root / str(current).lstrip("/")


def _digest_file(h: hashlib._Hash, file: Path) -> None:
    with file.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


def uv_binary() -> Path:
    """The uv executable venvseal pins (shipped by the ``uv`` wheel it depends on)."""
    import uv  # the PyPI package only locates its bundled binary

    return Path(uv.find_uv_bin())


def uv_version() -> str:
    """The pinned uv's version, from the METADATA of the uv wheel beside its package, as
    importlib.metadata reads it (whose import alone cost 14 ms of every command)."""
    import uv

    found = list(Path(uv.__file__).parent.parent.glob("uv-*.dist-info/METADATA"))
    if len(found) == 1:
        with found[0].open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.removeprefix("Version:").strip()
                if not line.strip():
                    break  # the headers end here
    import importlib.metadata  # an unusual install: let it search

    return importlib.metadata.version("uv")


def resolve(spec: Toolchain, root: Path | None = None) -> ResolvedToolchain:
    """Check the recipe's toolchain on the host and compute its identity.

    ``root`` is the realised root of a Debian toolchain (see debian.py); otherwise the
    recipe's ``root`` (default: the host's ``/``).
    """
    if root is None:
        if spec.debian is not None:
            raise ToolchainError("a Debian toolchain must be realised first (venvseal toolchain)")
        root = spec.root if spec.root is not None else Path("/")
    if not root.is_dir():
        raise ToolchainError(f"toolchain root {root} is not a directory; fix [toolchain] root")
    python = resolve_in_root(root, spec.python)
    if not python.is_file() or not os.access(python, os.X_OK):
        raise ToolchainError(
            f"toolchain python {spec.python} not found in root {root}; fix [toolchain] python "
            "or install the interpreter there")
    _check_visible(spec, root, python)
    h = hashlib.sha256()
    status = root / str(DPKG_STATUS).lstrip("/")
    if status.is_file():
        _digest_file(h, status)
    h.update(b"\0python\0")
    _digest_file(h, python)
    return ResolvedToolchain(
        root=root.resolve(),
        python=spec.python,
        library_dirs=tuple(spec.library_dirs),
        path=tuple(spec.path),
        identity=h.hexdigest(),
        uv_version=uv_version(),
    )


def _check_visible(spec: Toolchain, root: Path, python: Path) -> None:
    """Refuse, before any sandbox starts, a path the sandbox would not show: it mounts only
    the root's ROOT_ENTRIES (never home folders, /var or /srv), so an interpreter under
    ~/.pyenv passes every check on the host and fails inside with a wall of bwrap flags."""
    shown = ", ".join(f"/{name}" for name in ROOT_ENTRIES)
    problems = []
    real = PurePosixPath("/") / python.relative_to(root)
    if real.parts[1:2] and real.parts[1] not in ROOT_ENTRIES:
        via = f" (it is {real})" if real != spec.python else ""
        problems.append(f"[toolchain] python {spec.python}{via} is outside the folders the "
                        f"sandbox shows ({shown}); install the interpreter under /usr or /opt "
                        "of the root, or name one there")
    for key, folders in (("library-dirs", spec.library_dirs), ("path", spec.path)):
        for i, folder in enumerate(folders):
            # A folder the root lacks is only a dead entry; one it has but the sandbox
            # hides (a home folder) would be looked in on the host and missed inside.
            if (folder.parts[1:2] and folder.parts[1] not in ROOT_ENTRIES
                    and resolve_in_root(root, folder).is_dir()):
                problems.append(f"[toolchain] {key}[{i}] {folder} is outside the folders the "
                                f"sandbox shows ({shown}); use a folder under one of them")
    if problems:
        raise ToolchainError("\n".join(problems))
