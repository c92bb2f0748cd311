"""One walk of the venv: litter, hard links, and the files that may be ELF."""

from __future__ import annotations

import os
from pathlib import Path

from support import write

from venvseal.deps.survey import delete, survey

SITE = "lib/python3.11/site-packages"


def test_survey_sorts_the_venv_into_litter_and_files(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    write(venv / "pyvenv.cfg", "home = /usr/bin\n")
    write(venv / "bin/python", "")  # root litter, not entered
    write(venv / ".lock", "")
    write(venv / f"{SITE}/six.py", "")
    write(venv / f"{SITE}/__pycache__/six.cpython-311.pyc", "")
    write(venv / f"{SITE}/stray.pyc", "")
    write(venv / f"{SITE}/pkg-1.0.dist-info/uv_cache.json", "{}")
    write(venv / f"{SITE}/pkg-1.0.dist-info/RECORD", "")
    write(venv / f"{SITE}/pkg/_ext.so", "\x7fELF")
    write(venv / f"{SITE}/pkg/data/tool", "\x7fELF")
    (venv / f"{SITE}/linked-cache").mkdir()
    os.symlink("../six.py", venv / f"{SITE}/linked-cache/__pycache__")  # kept: a symlink
    found = survey(venv)
    rel = {p.relative_to(venv).as_posix() for p in found.litter}
    assert rel == {"bin", ".lock", f"{SITE}/__pycache__", f"{SITE}/stray.pyc",
                   f"{SITE}/pkg-1.0.dist-info/uv_cache.json"}
    files = [Path(p).relative_to(venv).as_posix() for p in found.files]
    assert files == sorted(files, key=lambda f: f.split("/"))
    assert set(files) == {"pyvenv.cfg", f"{SITE}/six.py", f"{SITE}/pkg-1.0.dist-info/RECORD",
                          f"{SITE}/pkg/_ext.so", f"{SITE}/pkg/data/tool"}
    maybe = {p.relative_to(venv).as_posix() for p in found.maybe_elf()}
    assert maybe == {f"{SITE}/pkg/_ext.so", f"{SITE}/pkg/data/tool"}
    removed = delete(found.litter)
    assert venv / "bin/python" in removed and venv / f"{SITE}/stray.pyc" in removed
    assert not (venv / "bin").exists() and (venv / f"{SITE}/six.py").exists()
