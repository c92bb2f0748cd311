"""Shared test helpers (moved from test_deps.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from support import (
    EXCLUDE_NEWER,
    PYTHON,
    toml_list,
    uv_lock,
    write,
)

CEXT_SETUP = """\
import os

from setuptools import Extension, setup

setup({metadata}ext_modules=[
    Extension("cext", [os.path.abspath("cext.c")], extra_compile_args=["-g"]),
])
"""

CEXT_PROJECT = '[project]\nname = "cext"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'

CEXT_BUILD_SYSTEM = ('[build-system]\nrequires = ["setuptools==80.9.0"]\n'
                     'build-backend = "setuptools.build_meta"\n')


RECIPE = f"""\
# The recipe of a test app: this comment must survive --update-hash.
[app]
name = "{{name}}"
version = "1.0.0"

[toolchain]
root = "/"
python = "{PYTHON}"

[deps]
hash = "{{hash}}"  # written by venvseal deps --update-hash
"""

ASSEMBLY = """
[[assemble.copy]]
from = "src/{name}"
to = "@site-packages@/{name}"

[verify]
imports = ["six", "idna", "member", "{name}"]
commands = ["@python@ -c 'import {name}; {name}.main()'"]
"""

def write_cext(dest: Path, source: str, layout: str) -> None:
    """The C extension's sources at ``dest``, a folder or (layout "sdist") an archive."""
    legacy = layout == "legacy folder"
    files = {
        "pyproject.toml": CEXT_BUILD_SYSTEM if legacy else CEXT_PROJECT + CEXT_BUILD_SYSTEM,
        "setup.py": CEXT_SETUP.format(
            metadata='name="cext", version="0.1.0", ' if legacy else ""),
        "cext.c": source,
    }
    if layout != "sdist":
        for name, text in files.items():
            write(dest / name, text)
        return
    files["PKG-INFO"] = "Metadata-Version: 2.1\nName: cext\nVersion: 0.1.0\n"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"cext-0.1.0/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 315532800
            tar.addfile(info, io.BytesIO(data))


def add_assembly(project: Path, name: str = "demo") -> Path:
    """``project`` (from :func:`make_app` with a member) with :data:`ASSEMBLY` in its recipe."""
    with (project / "venvseal.toml").open("a") as f:
        f.write(ASSEMBLY.format(name=name))
    return project



def make_app(root: Path, lock_cache: Path, *, name: str = "demo",
             dependencies: tuple[str, ...] = ("six==1.16.0", "idna==3.10"),
             member: bool = True, cext: str | None = None, cext_layout: str = "folder",
             requires_python: str = ">=3.11", lock: bool = True) -> Path:
    """A small uv project with a recipe, optionally a workspace member and a C extension."""
    deps_list = [*dependencies, *(["member"] if member else []), *(["cext"] if cext else [])]
    cext_path = "vendor/cext-0.1.0.tar.gz" if cext_layout == "sdist" else "vendor/cext"
    sources = {**({"member": "{ workspace = true }"} if member else {}),
               **({"cext": f'{{ path = "{cext_path}" }}'} if cext else {})}
    text = (f'[project]\nname = "{name}"\nversion = "0.1.0"\n'
            f'requires-python = "{requires_python}"\ndependencies = {toml_list(deps_list)}\n\n'
            f'[tool.uv]\nexclude-newer = "{EXCLUDE_NEWER}"\n')
    if member:
        text += '\n[tool.uv.workspace]\nmembers = ["packages/member"]\n'
    if sources:
        text += "\n[tool.uv.sources]\n" + "".join(f"{k} = {v}\n" for k, v in sources.items())
    write(root / "pyproject.toml", text)
    write(root / "src" / name / "__init__.py", "def main() -> None:\n    print('hello')\n")
    write(root / "venvseal.toml", RECIPE.format(name=name, hash=""))
    if member:
        write(root / "packages/member/pyproject.toml",
              '[project]\nname = "member"\nversion = "0.2.0"\nrequires-python = ">=3.11"\n'
              'dependencies = ["idna==3.10"]\n\n[build-system]\n'
              'requires = ["setuptools==80.9.0"]\nbuild-backend = "setuptools.build_meta"\n')
        write(root / "packages/member/src/member/__init__.py", "")
    if cext is not None:
        write_cext(root / cext_path, cext, cext_layout)
    if lock:
        uv_lock(root, lock_cache)
    return root
