"""The deps stage: its inputs (fast), and real builds through the CLI (slow).

The slow tests run the pinned uv in bubblewrap against the real package index, with the
host's /usr/bin/python3.11 as the toolchain. Every project is made here, in tmp_path, and
locked here with ``uv lock``; versions are pinned and ``exclude-newer`` freezes resolution.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from elftools.elf.elffile import ELFFile
from support import (
    PYTHON,
    Run,
    empty_store,
    fixture_text,
    store_paths,
    store_state,
    venvseal,
    write,
)
from support.apps import RECIPE, make_app

from venvseal.deps import stage as deps
from venvseal.recipe.files import load_recipe
from venvseal.recipe.model import Toolchain
from venvseal.recipe.uvlock import LockError
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.resolve import ResolvedToolchain

BUILD_ROOT = b"/venvseal-build"



def sri(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


# Fast: the stage's inputs -------------------------------------------------------------------

# uv.lock as uv writes it for the layout below; registry sources carry a made-up value.
WORKSPACE_LOCK = fixture_text("uvlock/demo-workspace.lock")

# A lone project: no [manifest], the root is an editable install of ".".
LONE_LOCK = fixture_text("uvlock/demo-lone.lock")

# What the stage must see: uv.lock, each member's pyproject.toml, the whole path dependency.
STAGED = {
    "workspace": {"uv.lock", "pyproject.toml", "packages/member/pyproject.toml",
                  "vendor/lib/pyproject.toml", "vendor/lib/lib.c", "vendor/lib/setup.py"},
    "lone": {"uv.lock", "pyproject.toml", "vendor/lib/pyproject.toml", "vendor/lib/lib.c",
             "vendor/lib/setup.py"},
}


def make_inputs_project(root: Path, layout: str) -> Path:
    """A project as the fast tests need it: files only, no network, no uv."""
    write(root / "venvseal.toml", RECIPE.format(name="demo", hash=""))
    write(root / "pyproject.toml", '[project]\nname = "demo"\nversion = "0.1.0"\n')
    write(root / "uv.lock", WORKSPACE_LOCK if layout == "workspace" else LONE_LOCK)
    write(root / "src/demo/__init__.py", "ANSWER = 42\n")
    write(root / "README.md", "the demo\n")
    write(root / "vendor/lib/pyproject.toml", '[project]\nname = "lib"\nversion = "0.1.0"\n')
    write(root / "vendor/lib/setup.py", "from setuptools import setup\nsetup()\n")
    write(root / "vendor/lib/lib.c", "int lib(void) { return 1; }\n")
    if layout == "workspace":
        write(root / "packages/member/pyproject.toml",
              '[project]\nname = "member"\nversion = "0.2.0"\n')
        write(root / "packages/member/src/member/__init__.py", "")
    return root


@pytest.fixture(scope="module")
def host_toolchain() -> ResolvedToolchain:
    return toolchain.resolve(Toolchain(root=Path("/"), python=PurePosixPath(PYTHON)))


def fingerprint(project: Path, tc: ResolvedToolchain) -> str:
    return deps.collect_inputs(load_recipe(project), tc).fingerprint()


def append(rel: str, text: str) -> Callable[[Path], None]:
    def edit(project: Path) -> None:
        with (project / rel).open("a") as f:
            f.write(text)
    return edit


def declare_hash(project: Path) -> None:
    write(project / "venvseal.toml", RECIPE.format(name="demo", hash=sri(b"any venv")))


# Each row: what changed, and how. The stage's output can depend on these...
CHANGES = [
    ("uv.lock", append("uv.lock", "# edited\n")),
    ("root pyproject.toml", append("pyproject.toml", 'description = "edited"\n')),
    ("root [tool.uv]", append("pyproject.toml", "[tool.uv]\nno-build-isolation = true\n")),
    ("member pyproject.toml", append("packages/member/pyproject.toml",
                                     'description = "edited"\n')),
    ("path dependency source", append("vendor/lib/lib.c", "int more(void) { return 2; }\n")),
    ("new file in the path dependency", lambda p: write(p / "vendor/lib/extra.h", "")),
    ("uv.toml added", lambda p: write(p / "uv.toml", "no-build-isolation = false\n")),
    ("deps.env", append("venvseal.toml", 'env = { CFLAGS = "-O1" }\n')),
    ("deps.exclude", append("venvseal.toml", 'exclude = ["six"]\n')),
    ("deps.extras", append("venvseal.toml", 'extras = ["postgres"]\n')),
]
# ...and not on these.
NON_CHANGES = [
    ("deps.hash declared", declare_hash),
    ("app code", append("src/demo/__init__.py", "ANSWER = 43\n")),
    ("new app file", lambda p: write(p / "src/demo/extra.py", "")),
    ("README", append("README.md", "more\n")),
    # What uv reads is the parsed pyproject.toml: a comment or a layout change is not an input.
    ("comment in pyproject.toml", append("pyproject.toml", "# edited\n")),
    ("layout of pyproject.toml", lambda p: write(p / "pyproject.toml", (
        p / "pyproject.toml").read_text().replace('name = "demo"', 'name   =   "demo"'))),
    ("app version", lambda p: write(p / "venvseal.toml", (p / "venvseal.toml").read_text()
                                    .replace('version = "1.0.0"', 'version = "1.0.1"'))),
]


@pytest.mark.parametrize(("case", "change"), CHANGES, ids=[row[0] for row in CHANGES])
def test_fingerprint_changes_with_an_input(tmp_path: Path, host_toolchain: ResolvedToolchain,
                                           case: str, change: Callable[[Path], None]) -> None:
    project = make_inputs_project(tmp_path / "p", "workspace")
    before = fingerprint(project, host_toolchain)
    change(project)
    assert fingerprint(project, host_toolchain) != before, case


@pytest.mark.parametrize("layout", ["workspace", "lone"])
@pytest.mark.parametrize(("case", "change"), NON_CHANGES, ids=[row[0] for row in NON_CHANGES])
def test_fingerprint_ignores_what_the_stage_does_not_read(
        tmp_path: Path, host_toolchain: ResolvedToolchain, case: str,
        change: Callable[[Path], None], layout: str) -> None:
    project = make_inputs_project(tmp_path / "p", layout)
    before = fingerprint(project, host_toolchain)
    change(project)
    assert fingerprint(project, host_toolchain) == before, case


# A recipe kept in pyproject.toml: [tool.venvseal] is venvseal's, not uv's. Each row: the edit,
# and whether the deps stage's fingerprint must change.
PYPROJECT_RECIPE = f"""\
[project]
name = "demo"
version = "0.1.0"

[tool.uv]
package = false

[tool.venvseal.app]
name = "demo"
version = "1.0.0"

[tool.venvseal.toolchain]
root = "/"
python = "{PYTHON}"

[tool.venvseal.deps]
hash = ""

[tool.venvseal.verify]
imports = ["six"]

[tool.venvseal.image]
entrypoint = ["@python@"]
"""
PYPROJECT_EDITS = [
    ("[tool.venvseal.image]", ('entrypoint = ["@python@"]', 'entrypoint = ["@python@", "-V"]'),
     False),
    ("[tool.venvseal.verify]", ('imports = ["six"]', 'imports = ["six", "idna"]'), False),
    ("[tool.venvseal.app] version", ('version = "1.0.0"', 'version = "1.0.1"'), False),
    ("[tool.venvseal.deps] hash", ('hash = ""', 'hash = "' + sri(b"x") + '"'), False),
    ("[tool.venvseal.deps] env", ('hash = ""', 'hash = ""\nenv = { CFLAGS = "-O1" }'), True),
    ("[tool.uv]", ("package = false", "package = false\nno-build-isolation = true"), True),
    ("[project]", ('version = "0.1.0"', 'version = "0.1.0"\ndescription = "x"'), True),
]


@pytest.mark.parametrize(("case", "edit", "changes"), PYPROJECT_EDITS,
                         ids=[row[0] for row in PYPROJECT_EDITS])
def test_only_what_uv_reads_in_pyproject_is_an_input(
        tmp_path: Path, host_toolchain: ResolvedToolchain, case: str, edit: tuple[str, str],
        changes: bool) -> None:
    project = tmp_path / "p"
    write(project / "pyproject.toml", PYPROJECT_RECIPE)
    write(project / "uv.lock", LONE_LOCK.replace('source = { directory = "vendor/lib" }',
                                                 'source = { registry = "registry" }'))
    before = fingerprint(project, host_toolchain)
    text = (project / "pyproject.toml").read_text()
    assert edit[0] in text, case
    write(project / "pyproject.toml", text.replace(edit[0], edit[1]))
    assert (fingerprint(project, host_toolchain) != before) is changes, case


def test_member_code_is_not_an_input(tmp_path: Path, host_toolchain: ResolvedToolchain) -> None:
    # --no-install-workspace: the members' code goes in at assembly, not here.
    project = make_inputs_project(tmp_path / "p", "workspace")
    before = fingerprint(project, host_toolchain)
    append("packages/member/src/member/__init__.py", "X = 1\n")(project)
    assert fingerprint(project, host_toolchain) == before


@pytest.mark.parametrize("field", ["identity", "uv_version", "python"])
def test_fingerprint_changes_with_the_toolchain(tmp_path: Path, host_toolchain: ResolvedToolchain,
                                                field: str) -> None:
    project = make_inputs_project(tmp_path / "p", "workspace")
    other = {"identity": "0" * 64, "uv_version": "0.0.1",
             "python": PurePosixPath("/usr/bin/python3.12")}[field]
    changed = dataclasses.replace(host_toolchain, **{field: other})  # type: ignore[arg-type]
    assert fingerprint(project, changed) != fingerprint(project, host_toolchain)


def test_fingerprint_does_not_depend_on_where_the_project_is(
        tmp_path: Path, host_toolchain: ResolvedToolchain) -> None:
    here = make_inputs_project(tmp_path / "here", "workspace")
    there = tmp_path / "elsewhere" / "there"
    shutil.copytree(here, there)
    assert fingerprint(here, host_toolchain) == fingerprint(there, host_toolchain)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize("layout", ["workspace", "lone"])
def test_stage_sources_copies_exactly_the_fingerprinted_files(
        tmp_path: Path, host_toolchain: ResolvedToolchain, layout: str) -> None:
    project = make_inputs_project(tmp_path / "p", layout)
    inputs = deps.collect_inputs(load_recipe(project), host_toolchain)
    dest = tmp_path / "staged"
    deps.stage_sources(inputs, dest)
    assert files_under(dest) == STAGED[layout]
    for rel in STAGED[layout]:
        assert (dest / rel).read_bytes() == (project / rel).read_bytes(), rel
    # Each staged file (or folder) is named in the fingerprint with its digest.
    named = {rel for rel, _digest in inputs.files}
    assert {r if not r.startswith("vendor/lib/") else "vendor/lib" for r in STAGED[layout]} \
        == named


def lock_with_source(source: str) -> str:
    return LONE_LOCK.replace('source = { directory = "vendor/lib" }', f"source = {source}")


# Each row: where uv.lock says the path dependency is, and what the error must say.
BAD_PATH_DEPENDENCIES = [
    ("sibling folder", '{ directory = "../shared/lib" }', "outside the project"),
    ("absolute archive", '{ path = "/opt/wheels/lib-0.1.0.tar.gz" }', "outside the project"),
    ("missing folder", '{ directory = "vendor/gone" }', "does not exist"),
]


@pytest.mark.parametrize(("case", "source", "fragment"), BAD_PATH_DEPENDENCIES,
                         ids=[row[0] for row in BAD_PATH_DEPENDENCIES])
def test_unusable_path_dependency_is_a_lock_error(tmp_path: Path,
                                                  host_toolchain: ResolvedToolchain, case: str,
                                                  source: str, fragment: str) -> None:
    project = make_inputs_project(tmp_path / "p", "lone")
    write(tmp_path / "shared/lib/pyproject.toml", '[project]\nname = "lib"\n')
    write(project / "uv.lock", lock_with_source(source))
    with pytest.raises(LockError) as info:
        deps.collect_inputs(load_recipe(project), host_toolchain)
    message = str(info.value)
    assert str(project / "uv.lock") in message, case
    assert "package lib" in message, case
    assert fragment in message, case


def test_symlink_out_of_the_project_is_a_lock_error(tmp_path: Path,
                                                   host_toolchain: ResolvedToolchain) -> None:
    project = make_inputs_project(tmp_path / "p", "lone")
    shutil.rmtree(project / "vendor/lib")
    write(tmp_path / "shared/lib/pyproject.toml", '[project]\nname = "lib"\n')
    (project / "vendor/lib").symlink_to(tmp_path / "shared/lib")
    with pytest.raises(LockError, match="outside the project"):
        deps.collect_inputs(load_recipe(project), host_toolchain)


# Slow: real builds through the CLI ---------------------------------------------------------

# An absolute source path, so that __FILE__ names the folder the build ran in.
# How the C extension reaches uv: a folder with static metadata; a folder whose metadata only
# setup.py knows (uv must build it even to check the lock); an sdist archive, which uv
# unpacks into a randomly named folder in its cache and builds there, as with xmlsec.
CEXT_LAYOUTS = ("folder", "legacy folder", "sdist")

# Debug info records the build folder, and __FILE__ puts the source's path in .rodata.
CEXT_SOURCE = """\
#include <Python.h>

static const char *where = __FILE__;

static PyObject *source(PyObject *self, PyObject *args) { return PyUnicode_FromString(where); }

static PyMethodDef methods[] = {{"source", source, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&module); }
"""


def deps_cmd(project: Path, store: Path, cache: Path, *extra: str) -> Run:
    return venvseal("--json", "deps", "--store", store, "--uv-cache", cache, *extra, project)


# What tests that build the whole app append to its recipe: its own package copied in, and
# checks that import everything and run it.








def site_packages(venv: Path) -> Path:
    return venv / "lib" / "python3.11" / "site-packages"


def files_containing(tree: Path, needle: bytes) -> list[str]:
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")
                  if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


@pytest.fixture(scope="module")
def lock_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-lock-cache")


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uv cache for the deps stage, shared where a test does not need a cold one."""
    return tmp_path_factory.mktemp("uv-cache-warm")


@dataclass(frozen=True)
class Pinned:
    """A project taken from an undeclared hash to a pinned, reused store path."""

    project: Path
    store: Path
    cache: Path
    empty: Run
    store_before_empty: dict[str, bytes | None]
    store_after_empty: dict[str, bytes | None]
    update: Run
    recipe_after_update: str
    reuse: Run


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory, lock_cache: Path) -> Pinned:
    base = tmp_path_factory.mktemp("pinned")
    project = make_app(base / "app", lock_cache)
    store, cache = base / "store", base / "uv-cache"
    before = empty_store(store)
    empty = venvseal("deps", "--store", store, "--uv-cache", cache, project)
    after = store_state(store)
    update = deps_cmd(project, store, cache, "--update-hash")
    recipe_after_update = (project / "venvseal.toml").read_text()
    reuse = deps_cmd(project, store, cache)
    return Pinned(project=project, store=store, cache=cache, empty=empty,
                  store_before_empty=before, store_after_empty=after, update=update,
                  recipe_after_update=recipe_after_update, reuse=reuse)


@pytest.mark.slow
def test_undeclared_hash_is_printed_and_nothing_is_stored(pinned: Pinned) -> None:
    assert pinned.empty.code == 1, pinned.empty.err
    assert 'hash = "sha256-' in pinned.empty.error
    assert "--update-hash" in pinned.empty.error
    assert "deps.hash is not declared" in pinned.empty.error
    assert pinned.store_after_empty == pinned.store_before_empty
    # The hash it printed is the one the next build pins.
    assert f'hash = "{pinned.update.json()["hash"]}"' in pinned.empty.error


@pytest.mark.slow
def test_update_hash_writes_the_recipe_and_keeps_its_comments(pinned: Pinned) -> None:
    assert pinned.update.code == 0, pinned.update.err
    data = pinned.update.json()
    assert data["hash_updated"] is True
    assert data["reused"] is False
    assert data["hash"].startswith("sha256-")
    recipe = pinned.recipe_after_update
    assert f'hash = "{data["hash"]}"  # written by venvseal deps --update-hash' in recipe
    assert recipe.startswith("# The recipe of a test app: this comment must survive")
    assert load_recipe(pinned.project).deps.hash is not None
    path = Path(data["path"])
    assert path.parent == pinned.store
    assert path.name.endswith("-demo-deps")
    assert store_paths(pinned.store) == [path.name]


@pytest.mark.slow
def test_unchanged_inputs_reuse_the_store_path(pinned: Pinned) -> None:
    assert pinned.reuse.code == 0, pinned.reuse.err
    data, first = pinned.reuse.json(), pinned.update.json()
    assert data["reused"] is True
    assert data["hash_updated"] is False
    assert (data["path"], data["hash"]) == (first["path"], first["hash"])
    assert "normalise" not in data  # nothing was built
    assert store_paths(pinned.store) == [Path(first["path"]).name]


@pytest.mark.slow
def test_output_is_normalised(pinned: Pinned) -> None:
    venv = Path(pinned.update.json()["path"])
    assert not (venv / "bin").exists()
    assert not [p for p in venv.rglob("*") if p.suffix == ".pyc" or p.name == "__pycache__"]
    cfg = (venv / "pyvenv.cfg").read_text()
    assert cfg.splitlines()[0] == "home = @python-home@"
    assert not [line for line in cfg.splitlines() if line.startswith("uv")]
    assert files_containing(venv, BUILD_ROOT) == []
    assert files_containing(venv, str(pinned.project).encode()) == []
    site = site_packages(venv)
    assert (site / "six.py").is_file()
    assert (site / "idna" / "__init__.py").is_file()
    # --no-install-workspace and --no-install-project: neither the member nor the app.
    installed = sorted(p.name for p in site.glob("*.dist-info"))
    assert installed == ["idna-3.10.dist-info", "six-1.16.0.dist-info"]


def copy_project(project: Path, dest: Path, *, declared: str | None = None) -> Path:
    """A copy of ``project`` (same inputs, same fingerprint), its recipe declaring ``declared``."""
    shutil.copytree(project, dest)
    if declared is not None:
        write(dest / "venvseal.toml", RECIPE.format(name="demo", hash=declared))
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("where", ["built now", "found in the store"])
def test_wrong_declared_hash_is_refused_and_nothing_is_stored(
        pinned: Pinned, tmp_path: Path, where: str) -> None:
    wrong = sri(b"some other venv")
    project = copy_project(pinned.project, tmp_path / "app", declared=wrong)
    store = pinned.store if where == "found in the store" else tmp_path / "store"
    cache = pinned.cache if where == "found in the store" else tmp_path / "uv-cache"
    before = empty_store(store)
    run = venvseal("deps", "--store", store, "--uv-cache", cache, project)
    assert run.code == 1, run.err
    assert f"specified: {wrong}" in run.error
    assert f"got:       {pinned.update.json()['hash']}" in run.error
    assert "hash mismatch" in run.error
    assert store_state(store) == before


@pytest.mark.slow
def test_cold_builds_agree_and_check_says_reproducible(pinned: Pinned, tmp_path: Path) -> None:
    pinned_hash = pinned.update.json()["hash"]
    # Another store, another (cold) uv cache, another folder: the declared hash must hold.
    project = copy_project(pinned.project, tmp_path / "elsewhere" / "app", declared=pinned_hash)
    other = deps_cmd(project, tmp_path / "store", tmp_path / "uv-cache")
    assert other.code == 0, other.err
    assert other.json()["reused"] is False
    assert other.json()["hash"] == pinned_hash
    check = venvseal("--json", "check", "--store", pinned.store, "--uv-cache", pinned.cache,
                     pinned.project)
    assert check.code == 0, check.err
    data = check.json()
    assert data["reproducible"] is True
    assert data["first"] == data["second"] == pinned_hash
    assert data["differences"] == []


@pytest.mark.slow
@pytest.mark.parametrize("layout", CEXT_LAYOUTS)
def test_c_extension_from_source_is_reproducible(tmp_path: Path, lock_cache: Path,
                                                 layout: str) -> None:
    # The xmlsec case in miniature: a C extension built from source, with debug info and
    # __FILE__ naming its build folder; two cold builds must still agree.
    project = make_app(tmp_path / "app", lock_cache, dependencies=(), member=False,
                       cext=CEXT_SOURCE, cext_layout=layout)
    first = deps_cmd(project, tmp_path / "store1", tmp_path / "cache1", "--update-hash")
    assert first.code == 0, first.err
    pinned_hash = first.json()["hash"]
    again = copy_project(project, tmp_path / "again", declared=pinned_hash)
    second = deps_cmd(again, tmp_path / "store2", tmp_path / "cache2")
    assert second.code == 0, second.err
    assert second.json()["hash"] == pinned_hash
    assert second.json()["reused"] is False

    venv = Path(first.json()["path"])
    [so] = site_packages(venv).glob("cext.cpython-311-*.so")
    assert BUILD_ROOT not in so.read_bytes()
    assert files_containing(venv, BUILD_ROOT) == []
    with so.open("rb") as f:
        sections = {s.name for s in ELFFile(f).iter_sections()}
    assert ".debug_info" not in sections
    assert ".note.gnu.build-id" in sections
    assert not list(site_packages(venv).glob("cext-*.dist-info/uv_cache.json"))
    # Still a working extension, its __FILE__ replaced by a filler of the same length.
    done = subprocess.run([PYTHON, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import cext; print(cext.source())", str(site_packages(venv))],
                          capture_output=True, text=True, check=True)
    printed = done.stdout.strip()
    assert printed.startswith("/")
    assert "venvseal-build" not in printed
    if layout != "sdist":  # built in place, in the staged copy of the project
        assert len(printed) == len("/venvseal-build/src/vendor/cext/cext.c")


# Bad input, table-driven ---------------------------------------------------------------------

BROKEN_C = "#error deliberately broken\n" + CEXT_SOURCE
NEEDS_XMLSEC = "#include <xmlsec/xmlsec.h>\n" + CEXT_SOURCE


def missing_lock(root: Path, lock_cache: Path) -> Path:
    return make_app(root, lock_cache, lock=False)


def stale_lock(root: Path, lock_cache: Path) -> Path:
    project = make_app(root, lock_cache, member=False)
    text = (project / "pyproject.toml").read_text()
    write(project / "pyproject.toml", text.replace('"idna==3.10"', '"idna==3.9"'))
    return project


def python_too_old(root: Path, lock_cache: Path) -> Path:
    # uv will not lock for >=3.12 with python3.11, so lock for >=3.11 and then raise it. That
    # also makes the lock stale, but uv checks the interpreter first and says so.
    project = make_app(root, lock_cache, member=False)
    text = (project / "pyproject.toml").read_text()
    write(project / "pyproject.toml", text.replace('">=3.11"', '">=3.12"'))
    return project


def compile_error(root: Path, lock_cache: Path) -> Path:
    return make_app(root, lock_cache, dependencies=(), member=False, cext=BROKEN_C)


def missing_header(root: Path, lock_cache: Path) -> Path:
    if Path("/usr/include/xmlsec/xmlsec.h").exists():
        pytest.skip("the host has xmlsec/xmlsec.h on the default include path")
    return make_app(root, lock_cache, dependencies=(), member=False, cext=NEEDS_XMLSEC)


def offline(root: Path, lock_cache: Path) -> Path:
    return make_app(root, lock_cache, dependencies=("six==1.16.0",), member=False)


def unshare_net_works() -> bool:
    try:
        done = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    return done.returncode == 0


# Each row: what is wrong, how to make the project, fragments the error must contain.
# Each row: what is wrong, how, the exit code (2: bad input; 1: a build step failed), and
# fragments of the message.
BAD_INPUT = [
    ("missing uv.lock", missing_lock, 2, ["uv.lock", "'uv lock'"]),
    ("stale uv.lock", stale_lock, 1, ["uv.lock", "out of date", "'uv lock'"]),
    ("python too old", python_too_old, 1,
     [PYTHON, "requires Python >=3.12", "[toolchain] python"]),
    ("compile error", compile_error, 1,
     ["building cext", "from source failed", "#error deliberately broken"]),
    ("missing header", missing_header, 1,
     ["building cext", "xmlsec/xmlsec.h", "install libxmlsec1-dev in the toolchain"]),
    ("no network", offline, 1, ["the deps stage needs network", "check the connection"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "make", "code", "fragments"), BAD_INPUT,
                         ids=[row[0] for row in BAD_INPUT])
def test_bad_input_gives_a_clear_error_and_stores_nothing(
        tmp_path: Path, lock_cache: Path, warm_cache: Path, case: str,
        make: Callable[[Path, Path], Path], code: int, fragments: list[str]) -> None:
    if case == "no network" and not unshare_net_works():
        pytest.skip("unshare -n needs root or unprivileged user namespaces")
    project = make(tmp_path / "app", lock_cache)
    store = tmp_path / "store"
    before = empty_store(store)
    if case == "no network":  # a cold cache: a warm one would not need the network
        argv = ["deps", "--store", str(store), "--uv-cache", str(tmp_path / "cold"), str(project)]
        done = subprocess.run(["unshare", "-n", sys.executable, "-m", "venvseal", *argv],
                              capture_output=True, text=True, check=False)
        run = Run(done.returncode, done.stdout, done.stderr)
    else:
        run = venvseal("deps", "--store", store, "--uv-cache", warm_cache, project)
    assert run.code == code, run.err
    for fragment in fragments:
        assert fragment in run.error, f"{case}: {fragment!r} not in:\n{run.error}"
    assert "Traceback" not in run.err
    assert store_state(store) == before
