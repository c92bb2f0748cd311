"""``[assemble] python-path``: folders of the closure put on ``sys.path``.

For an app that is not a package (``tool.uv.package = false``, a Django site), its code is
copied into the closure and named here. venvseal writes one ``.pth`` file into site-packages
listing each folder at the path the closure runs at; Python's ``site`` module appends each
line to ``sys.path`` at start-up, after site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from venvseal.assemble.forest import Forest
from venvseal.errors import VenvsealError
from venvseal.recipe.model import Recipe

PTH_FILE = "_venvseal_python_path.pth"


class PythonPathError(VenvsealError):
    """A python-path folder is not in the closure."""


def write(rec: Recipe, out: Path, *, logical: PurePosixPath, site_packages: str,
          closure: Forest) -> Path | None:
    """Write the .pth file for ``rec.assemble.python-path`` into the closure at ``out``
    (which runs at ``logical``); its path, or None if the recipe names no folder."""
    if not rec.assemble.python_path:
        return None
    lines = []
    for i, rel in enumerate(rec.assemble.python_path):
        folder = out / rel.replace("@site-packages@", site_packages)
        if not closure.contains(folder) or not folder.is_dir():
            raise PythonPathError(f"{rec.key_prefix}assemble.python-path[{i}]: {rel} is not a "
                                  "folder in the closure; copy it in with [[assemble.copy]] "
                                  "(copy rules run first) or fix the path")
        lines.append(f"{logical / closure.relative(folder)}\n")
    pth = closure.own_dir(out / site_packages) / PTH_FILE
    if os.path.lexists(pth):
        raise PythonPathError(f"{rec.key_prefix}assemble.python-path: {PTH_FILE} is in "
                              "site-packages already (a distribution installed it); venvseal "
                              "cannot write it")
    pth.write_text("".join(lines), encoding="utf-8")
    return pth
