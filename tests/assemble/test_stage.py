"""The assembly stage's bad input, table-driven, on a small real project (slow).

One project is made and its deps stage pinned once: ``six``, a path dependency ``cext``
whose C extension needs two libraries that exist only in its build tree (stubs its
setup.py compiles), and two workspace members that cannot be installed (one ships
``six.py``, one names a build backend it does not require). The base recipe installs no
member and lets the two libraries stay unresolved, so it builds. Each case changes only what
the assembly stage reads (the deps stage is reused) and must fail with a clear message,
without a traceback, leaving the store exactly as it was: no path, no meta, no debris, and
every path's content unchanged.

``[assemble] ignore-missing`` lets the relinking and the loader check pass; the library is
still missing at run time, so importing the module fails with the loader's own message (in
``[verify] imports`` or in ``venvseal run``). That is the honest outcome: the recipe said the
library comes from elsewhere (a driver, say), and this toolchain does not have it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    EXCLUDE_NEWER,
    BuiltProject,
    host_recipe,
    store_state,
    uv_lock,
    venvseal,
    venvseal_process,
    write,
)

pytestmark = pytest.mark.slow

PROJECT = f"""\
[project]
name = "app"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["six==1.16.0", "cext"]

[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"
package = false

[tool.uv.workspace]
members = ["packages/clash", "packages/nobackend"]

[tool.uv.sources]
cext = {{ path = "vendor/cext" }}
"""

RECIPE = host_recipe("app", "1.0.0", """
[assemble]
workspace = []
ignore-missing = ["libmissing_*"]

[[assemble.copy]]
from = "app"
to = "@site-packages@/app"

[[substitute]]
file = "@site-packages@/app/__init__.py"
replace = "HOME = None"
with = 'HOME = "@out@"'

[verify]
imports = ["app", "six"]
""")

FLIT = '[build-system]\nrequires = ["flit_core==3.12.0"]\nbuild-backend = "flit_core.buildapi"\n'

# Two stub libraries, compiled into the build tree only: the extension needs them at run time.
CEXT_SETUP = """\
import os
import subprocess

from setuptools import Extension, setup

STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build", "stubs")
os.makedirs(STUBS, exist_ok=True)
for name in ("missing_a", "missing_b"):
    source = os.path.join(STUBS, name + ".c")
    with open(source, "w") as f:
        f.write("int %s(void) { return 1; }\\n" % name)
    subprocess.check_call(["cc", "-shared", "-fPIC", "-Wl,-soname,lib%s.so.1" % name,
                           "-o", os.path.join(STUBS, "lib%s.so" % name), source])

setup(ext_modules=[Extension("cext", ["cext.c"], library_dirs=[STUBS],
                             libraries=["missing_a", "missing_b"])])
"""
CEXT_SOURCE = """\
#include <Python.h>

int missing_a(void);
int missing_b(void);

static PyObject *answer(PyObject *self, PyObject *args) {
    return PyLong_FromLong(missing_a() + missing_b());
}

static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&module); }
"""
CEXT_SO = "lib/python3.11/site-packages/cext.cpython-311-x86_64-linux-gnu.so"

PATCH = """\
--- a/lib/python3.11/site-packages/app/__init__.py
+++ b/lib/python3.11/site-packages/app/__init__.py
@@ -1,2 +1,2 @@
-NAME = "app"
+NAME = "patched"
 HOME = None
"""


def make_project(root: Path, lock_cache: Path) -> Path:
    write(root / "pyproject.toml", PROJECT)
    write(root / "venvseal.toml", RECIPE)
    write(root / "app" / "__init__.py", 'NAME = "app"\nHOME = None\n')
    write(root / "extra" / "six.py", "# not the real six\n")
    write(root / "vendor/cext/pyproject.toml",
          '[project]\nname = "cext"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'
          '[build-system]\nrequires = ["setuptools==80.9.0"]\n'
          'build-backend = "setuptools.build_meta"\n')
    write(root / "vendor/cext/setup.py", CEXT_SETUP)
    write(root / "vendor/cext/cext.c", CEXT_SOURCE)
    # Ships six.py, which the dependency six installs too.
    write(root / "packages/clash/pyproject.toml",
          '[project]\nname = "clash"\nversion = "0.1.0"\ndescription = "clashes"\n'
          'requires-python = ">=3.11"\n\n[tool.flit.module]\nname = "six"\n\n' + FLIT)
    write(root / "packages/clash/six.py", '"""Not six."""\n')
    # Names hatchling but requires flit_core: the offline build environment has no hatchling.
    write(root / "packages/nobackend/pyproject.toml",
          '[project]\nname = "nobackend"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n\n'
          '[build-system]\nrequires = ["flit_core==3.12.0"]\nbuild-backend = "hatchling.build"\n')
    write(root / "packages/nobackend/nobackend/__init__.py", "")
    uv_lock(root, lock_cache)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    root = tmp_path_factory.mktemp("assemble")
    cache = root / "uv-cache"
    project = make_project(root / "app", cache)
    store = root / "store"
    pinned = venvseal("deps", "--update-hash", "--store", store, "--uv-cache", cache, project)
    assert pinned.code == 0, pinned.err
    built = venvseal("--json", "build", "--store", store, "--uv-cache", cache, project)
    return BuiltProject(project=project, store=store, cache=cache, built=built)


def test_base_recipe_builds_and_the_ignored_library_is_missing_at_run_time(
        base: BuiltProject) -> None:
    assert base.built.code == 0, base.built.err
    closure = Path(base.built.json()["path"])
    assert (closure / CEXT_SO).is_file()
    assert not list(closure.rglob("libmissing_*"))  # the stubs stayed in the build tree
    assert (closure / "lib/python3.11/site-packages/app/__init__.py").read_text() == (
        f'NAME = "app"\nHOME = "/venvseal/store/{closure.name}"\n')
    run = venvseal_process("run", base.project, "--store", base.store, "--uv-cache", base.cache,
                           "--", "@python@", "-c", "import cext")
    assert run.code == 1
    assert "libmissing_a.so.1: cannot open shared object file" in run.err


def test_a_dependency_file_can_be_patched_without_touching_the_deps(base: BuiltProject,
                                                                    tmp_path: Path) -> None:
    # The closure links to the relinked deps (forest.py): patching six.py makes it the
    # closure's own copy, with its RECORD line and its bytecode redone.
    project = tmp_path / "app"
    shutil.copytree(base.project, project, symlinks=True)
    append_recipe('\n[[substitute]]\nfile = "@site-packages@/six.py"\n'
                  'replace = \'__version__ = "1.16.0"\'\n'
                  'with = \'__version__ = "1.16.0+patched"\'\n')(project)
    built = venvseal("--json", "build", "--store", base.store, "--uv-cache", base.cache,
                     project)
    assert built.code == 0, built.err
    closure, relinked = (Path(built.json()[k]) for k in ("path", "relinked"))
    site = closure / "lib/python3.11/site-packages"
    assert not (site / "six.py").is_symlink()
    assert '__version__ = "1.16.0+patched"' in (site / "six.py").read_text()
    assert '__version__ = "1.16.0"' in (relinked / "lib/python3.11/site-packages/six.py"
                                         ).read_text()
    record = next(site.glob("six-*.dist-info")) / "RECORD"
    assert not record.is_symlink()
    digest = base64.urlsafe_b64encode(hashlib.sha256((site / "six.py").read_bytes()).digest())
    assert f"six.py,sha256={digest.decode().rstrip('=')}," in record.read_text()
    assert [p.name for p in (site / "__pycache__").glob("six.*.pyc")] == [
        "six.cpython-311.pyc"]
    assert not (site / "__pycache__" / "six.cpython-311.pyc").is_symlink()
    run = venvseal_process("run", project, "--store", base.store, "--uv-cache", base.cache,
                           "--", "@python@", "-c", "import six; print(six.__version__)")
    assert run.code == 0, run.err
    assert run.out.strip() == "1.16.0+patched"
    verify = venvseal("--json", "verify", "--store", base.store)
    assert verify.code == 0, verify.out


def replace_in(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        text = (project / rel).read_text()
        assert old in text, f"{old!r} not in {rel}"
        (project / rel).write_text(text.replace(old, new, 1))
    return change


def recipe(old: str, new: str) -> Callable[[Path], None]:
    return replace_in("venvseal.toml", old, new)


def append_recipe(text: str) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        with (project / "venvseal.toml").open("a") as f:
            f.write(text)
    return change


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        for one in changes:
            one(project)
    return change


def symlink(rel: str, target: str) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        (project / rel).symlink_to(target)
    return change


def outside_folder(project: Path) -> None:
    write(project.parent / "outside" / "secret.txt", "secret\n")
    (project / "leak").symlink_to(project.parent / "outside")


IMPORT_CEXT = recipe('imports = ["app", "six"]', 'imports = ["app", "six", "cext"]')
IMPORTS_BOOM = recipe('imports = ["app", "six"]', 'imports = ["app", "app.boom", "six"]')
WRITE_SIX = ("commands = [\"@python@ -c \\\"open('@site-packages@/six.py', 'a')"
             ".write('# tampered')\\\"\"]\n")

# Each row: what is wrong, how to make it so, the exit code, fragments of the error.
BAD_INPUT: list[tuple[str, Callable[[Path], None], int, list[str]]] = [
    ("missing shared libraries", recipe('ignore-missing = ["libmissing_*"]\n', ""), 1,
     ["2 needed shared libraries cannot be found", f"{CEXT_SO} -> libmissing_a.so.1",
      f"{CEXT_SO} -> libmissing_b.so.1", "[toolchain] library-dirs",
      "[assemble] ignore-missing"]),
    ("ignored library imported by verify", IMPORT_CEXT, 1,
     ["verify: 1 import(s) failed", "cext", "libmissing_a.so.1: cannot open shared object file"]),
    ("substitution text absent", recipe('replace = "HOME = None"', 'replace = "HOME = nowhere"'),
     1, ["substitute[0]: 'HOME = nowhere' not found in @site-packages@/app/__init__.py",
         "update the recipe's replace text"]),
    ("substitution count differs", recipe('with = \'HOME = "@out@"\'',
                                          'with = \'HOME = "@out@"\'\ncount = 2'), 1,
     ["substitute[0]: 'HOME = None' occurs 1 times in @site-packages@/app/__init__.py",
      "expects 2"]),
    ("patch does not apply",
     both(lambda p: write(p / "fix.diff", PATCH.replace('-NAME = "app"', '-NAME = "other"')),
          append_recipe('\n[[substitute]]\npatch = "fix.diff"\n')), 1,
     ["substitute[1]: fix.diff does not apply to the closure", "FAILED"]),
    ("copy from a parent folder", recipe('from = "app"', 'from = "../outside"'), 2,
     ["assemble.copy[0].from: '../outside' must not contain '..'"]),
    ("copy from an absolute path", recipe('from = "app"', 'from = "/etc/passwd"'), 2,
     ["assemble.copy[0].from: '/etc/passwd' must be a relative path"]),
    ("copy through a symlink out of the project",
     both(outside_folder, recipe('from = "app"', 'from = "leak"')), 1,
     ["assemble.copy[0].from: leak leads outside", "copy only files inside the project"]),
    ("copy of a folder holding a symlink out of the project",
     symlink("app/hostname", "/etc/hostname"), 1,
     ["app/hostname: symlink to /etc/hostname leads outside",
      "replace it with the file or drop it"]),
    ("copy overwriting a dependency's file",
     append_recipe('\n[[assemble.copy]]\nfrom = "extra/six.py"\nto = "@site-packages@/six.py"\n'),
     1, ["assemble.copy[1]: copying extra/six.py to @site-packages@/six.py would overwrite "
         "six.py, installed by six", "choose another destination"]),
    ("member installs a dependency's file", recipe("workspace = []", 'workspace = ["clash"]'), 1,
     ["distributions six and clash both install six.py",
      "exclude one of them ([deps] exclude or [assemble] workspace)"]),
    ("member backend not available offline",
     recipe("workspace = []", 'workspace = ["nobackend"]'), 1,
     ["workspace member nobackend: its build backend hatchling.build is not available offline",
      "[deps] build-requires", "venvseal deps --update-hash"]),
    ("verify import raises",
     both(lambda p: write(p / "app/boom.py", "raise RuntimeError('kaboom: DEMO_KEY unset')\n"),
          IMPORTS_BOOM), 1,
     ["verify: 1 import(s) failed", "app.boom", "RuntimeError: kaboom: DEMO_KEY unset"]),
    ("verify command writes into the closure", recipe("[verify]\n", f"[verify]\n{WRITE_SIX}"),
     # Refused by the file's mode (the step is not root), and behind it a read-only mount.
     1, ["verify.commands[0] failed (exit 1)", "Permission denied"]),
]


@pytest.mark.parametrize(("case", "change", "code", "fragments"), BAD_INPUT,
                         ids=[row[0] for row in BAD_INPUT])
def test_bad_input_gives_a_clear_error_and_stores_nothing(
        base: BuiltProject, tmp_path: Path, case: str, change: Callable[[Path], None], code: int,
        fragments: list[str]) -> None:
    assert base.built.code == 0, base.built.err
    project = tmp_path / "app"
    shutil.copytree(base.project, project, symlinks=True)
    change(project)
    before = store_state(base.store)
    run = base.build(project)
    assert run.code == code, run.err
    for fragment in fragments:
        assert fragment in run.error, f"{case}: {fragment!r} not in:\n{run.error}"
    assert "Traceback (most recent call last)" not in run.err.split("venvseal: error:")[0]
    assert "internal error" not in run.error
    assert store_state(base.store) == before
    # Nothing in the store was changed through a hard link or a writable mount either.
    verify = venvseal("--json", "verify", "--store", base.store)
    assert verify.code == 0, verify.out
    assert verify.json()["checked"] == len([p for p in os.listdir(base.store)
                                            if not p.startswith(".")])
