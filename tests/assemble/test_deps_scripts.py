"""What a dependency's wheel ships in bin/ (.data/scripts) reaches the closure (issue 12; slow).

maturin's PyPI wheel is a Rust program in ``maturin-1.16.0.data/scripts/`` and no entry
point; a local path dependency, built by setuptools in the deps stage, ships a Python script
and a shell script (``scripts=[...]``) beside a console script. Each builder (root, then a user
it creates) locks and builds the app and runs all four from the closure through
``venvseal run``; the deps path keeps exactly the three shipped files, the Python script's
shebang the wheel's ``#!python`` placeholder, and every RECORD matches the files.
"""

from __future__ import annotations

import base64
import csv
import hashlib
from pathlib import Path

import pytest
from support import EXCLUDE_NEWER, host_recipe, write
from support.projects import Builder

pytestmark = pytest.mark.slow

ROOT = f"""\
[project]
name = "app"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["maturin==1.16.0", "textscripts"]

[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"
package = false

[tool.uv.sources]
textscripts = {{ path = "vendor/textscripts" }}
"""

RECIPE = host_recipe("app", "1.0.0", """
[verify]
commands = ["@out@/bin/maturin --version", "@out@/bin/hello-py", "@out@/bin/hello-sh"]
""")

SETUP_PY = """\
from setuptools import setup

setup(name="textscripts", version="1.0", py_modules=["textscripts"],
      scripts=["scripts/hello-py", "scripts/hello-sh", "scripts/hello.py"],
      entry_points={"console_scripts": ["textscripts-cli = textscripts:main"]})
"""

HELLO_PY = "#!/usr/bin/env python\nimport sys\nprint('py', sys.prefix)\n"
HELLO_SH = '#!/bin/sh\necho "sh $*"\n'
# hello.py: a script named as a module (as some of authentik's dependencies ship), which the
# relinked deps' bytecode compiler must leave alone (no bin/__pycache__).
SHIPPED = ["hello-py", "hello-sh", "hello.py", "maturin"]


def make_project(root: Path) -> None:
    write(root / "pyproject.toml", ROOT)
    write(root / "venvseal.toml", RECIPE)
    vendor = root / "vendor/textscripts"
    write(vendor / "pyproject.toml", '[build-system]\nrequires = ["setuptools==80.9.0"]\n'
          'build-backend = "setuptools.build_meta"\n')
    write(vendor / "setup.py", SETUP_PY)
    write(vendor / "textscripts.py", "def main() -> None:\n    print('cli')\n")
    write(vendor / "scripts/hello-py", HELLO_PY).chmod(0o755)
    write(vendor / "scripts/hello-sh", HELLO_SH).chmod(0o755)
    write(vendor / "scripts/hello.py", HELLO_PY).chmod(0o755)


def assert_record_matches(venv: Path, dist_info: str) -> dict[str, str]:
    """Every bin/ row of the distribution's RECORD has the file's hash and size."""
    site = venv / "lib/python3.11/site-packages"
    with open(site / dist_info / "RECORD", newline="") as f:
        rows = {row[0]: row for row in csv.reader(f) if row and row[0].startswith("../../../bin/")}
    for path, digest, size in rows.values():
        data = (site / path).read_bytes()
        encoded = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={encoded}", len(data)), path
    return {path.removeprefix("../../../bin/"): digest for path, digest, _ in rows.values()}


def test_dependencies_bin_files_run_from_the_closure(builder: Builder) -> None:
    project, run = builder.place_and_build(make_project)
    data = run.json()
    assert data["verified"]["commands"] == 3
    deps, closure = Path(data["deps"]), Path(data["path"])
    # The deps path keeps what the wheels ship in bin/, not the launcher or the venv's files.
    assert sorted(p.name for p in (deps / "bin").iterdir()) == SHIPPED
    assert (deps / "bin/hello-py").read_text() == HELLO_PY.replace("/usr/bin/env python",
                                                                   "python")
    assert (deps / "bin/hello-sh").read_text() == HELLO_SH
    assert (deps / "bin/maturin").read_bytes()[:4] == b"\x7fELF"
    assert set(assert_record_matches(deps, "maturin-1.16.0.dist-info")) == {"maturin"}
    assert set(assert_record_matches(deps, "textscripts-1.0.dist-info")) == {
        "hello-py", "hello-sh", "hello.py"}
    # The closure has them beside the launcher; the Python script names the closure's python.
    names = sorted(p.name for p in (closure / "bin").iterdir())
    assert [n for n in names if not n.startswith("python")] == [*SHIPPED, "textscripts-cli"]
    shebang = (closure / "bin/hello-py").read_text().splitlines()[0]
    assert shebang.startswith("#!/") and shebang.endswith(f"/{closure.name}/bin/python")
    assert (closure / "bin/maturin").read_bytes() == (deps / "bin/maturin").read_bytes()
    assert set(assert_record_matches(closure, "textscripts-1.0.dist-info")) == {
        "hello-py", "hello-sh", "hello.py"}
    for argv, out in ((["@out@/bin/maturin", "--version"], "maturin 1.16.0"),
                      (["@out@/bin/hello-sh", "a", "b"], "sh a b"),
                      (["@out@/bin/textscripts-cli"], "cli")):
        ran = builder.venvseal("run", project, "--store", builder.store, "--", *argv)
        assert (ran.code, ran.out.strip()) == (0, out), ran.err
    ran = builder.venvseal("run", project, "--store", builder.store, "--", "@out@/bin/hello-py")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("py /") and ran.out.strip().endswith(closure.name)
