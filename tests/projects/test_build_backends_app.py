"""A workspace app whose members have build backends that run executables, built offline
as root and as an unprivileged user (issue 12; slow).

The deps stage installs every workspace member's build-system.requires into the deps path's
build environment; the assembly builds the members from it with no network. uv_build runs its
``uv-build`` executable (found on PATH, in the environment's ``bin/``), scikit-build-core runs
cmake and ninja from their PyPI wheels to compile a C extension, maturin runs its own
executable, which runs the toolchain's cargo (Debian's, rustc 1.63) to compile a Rust cdylib
that cffi wraps and a Rust program the wheel ships in ``bin/`` (the crates need nothing from
crates.io: no network reaches it here). Cargo's home and target folders are the sandbox's
own (its HOME, the copied source). Each builder (root, then a user it creates, with a store
and uv cache of its own) locks, builds and verifies the app, then runs its entry point, both
compiled extensions and the program through ``venvseal run``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import EXCLUDE_NEWER, host_recipe, write
from support.projects import Builder

pytestmark = pytest.mark.slow

ROOT = f"""\
[project]
name = "demo"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["member", "native", "rusty", "rustbin"]

[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"
package = false

[tool.uv.workspace]
members = ["packages/member", "packages/native", "packages/rusty", "packages/rustbin"]

[tool.uv.sources]
member = {{ workspace = true }}
native = {{ workspace = true }}
rusty = {{ workspace = true }}
rustbin = {{ workspace = true }}
"""

RECIPE = host_recipe("demo", "1.0.0", """
[verify]
imports = ["member", "native", "rusty"]
commands = [
    "@out@/bin/member-hello",
    "@python@ -c 'import native; assert native.answer() == 42'",
    "@python@ -c 'import rusty; assert rusty.lib.answer() == 42'",
    "@out@/bin/rustbin",
]
""")

UV_BUILD_MEMBER = """\
[project]
name = "member"
version = "0.2.0"
requires-python = ">=3.11"

[project.scripts]
member-hello = "member:hello"

[build-system]
requires = ["uv_build==0.13.6"]
build-backend = "uv_build"
"""

SKBUILD_MEMBER = """\
[project]
name = "native"
version = "0.1.0"
requires-python = ">=3.11"

[build-system]
requires = ["scikit-build-core==1.1.1", "cmake==4.4.4", "ninja==1.13.2"]
build-backend = "scikit_build_core.build"
"""

# A Rust cdylib with a C ABI, wrapped by cffi: no crate from crates.io (unreachable offline),
# compiled by the toolchain's cargo and rustc (Debian's).
MATURIN_MEMBER = """\
[project]
name = "rusty"
version = "0.3.0"
requires-python = ">=3.11"
dependencies = ["cffi==2.1.1"]

[build-system]
requires = ["maturin==1.16.0", "cffi==2.1.1"]
build-backend = "maturin"

[tool.maturin]
bindings = "cffi"
"""

CARGO_TOML = """\
[package]
name = "rusty"
version = "0.3.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]

[profile.release]
strip = true
"""

LIB_RS = """\
#[no_mangle]
pub extern "C" fn answer() -> i32 {
    42
}
"""

# A Rust program maturin ships in the wheel's .data/scripts (bin/ of the closure).
MATURIN_BIN_MEMBER = """\
[project]
name = "rustbin"
version = "0.4.0"
requires-python = ">=3.11"

[build-system]
requires = ["maturin==1.16.0"]
build-backend = "maturin"

[tool.maturin]
bindings = "bin"
"""

CARGO_BIN_TOML = """\
[package]
name = "rustbin"
version = "0.4.0"
edition = "2021"

[dependencies]

[profile.release]
strip = true
"""

MAIN_RS = """\
fn main() {
    println!("hello from rust");
}
"""

CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.15...3.31)
project(${SKBUILD_PROJECT_NAME} LANGUAGES C)
find_package(Python COMPONENTS Interpreter Development.Module REQUIRED)
Python_add_library(_native MODULE src/native.c WITH_SOABI)
install(TARGETS _native DESTINATION native)
"""

NATIVE_C = """\
#include <Python.h>

static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
"""


def make_project(root: Path) -> None:
    write(root / "pyproject.toml", ROOT)
    write(root / "venvseal.toml", RECIPE)
    member = root / "packages/member"
    write(member / "pyproject.toml", UV_BUILD_MEMBER)
    write(member / "src/member/__init__.py", "def hello() -> None:\n    print('hello')\n")
    native = root / "packages/native"
    write(native / "pyproject.toml", SKBUILD_MEMBER)
    write(native / "CMakeLists.txt", CMAKE_LISTS)
    write(native / "src/native.c", NATIVE_C)
    write(native / "src/native/__init__.py", "from native._native import answer\n")
    rusty = root / "packages/rusty"
    write(rusty / "pyproject.toml", MATURIN_MEMBER)
    write(rusty / "Cargo.toml", CARGO_TOML)
    write(rusty / "src/lib.rs", LIB_RS)
    rustbin = root / "packages/rustbin"
    write(rustbin / "pyproject.toml", MATURIN_BIN_MEMBER)
    write(rustbin / "Cargo.toml", CARGO_BIN_TOML)
    write(rustbin / "src/main.rs", MAIN_RS)


def test_uv_build_scikit_build_core_and_maturin_members_build_offline(builder: Builder) -> None:
    started = time.monotonic()
    project, run = builder.place_and_build(make_project)
    print(f"{builder.who}: locked and built in {time.monotonic() - started:.1f} s")
    data = run.json()
    assert data["verified"]["imports"] == 3 and data["verified"]["commands"] == 4
    closure = Path(data["path"])
    site = closure / "lib/python3.11/site-packages"
    assert (site / "member-0.2.0.dist-info").is_dir()
    assert (site / "native-0.1.0.dist-info").is_dir()
    assert list((site / "native").glob("_native.cpython-311-*.so"))
    assert (site / "rusty-0.3.0.dist-info").is_dir() and (site / "rusty/librusty.so").is_file()
    # The program maturin built stays in bin/, beside the launchers of the entry points.
    assert (site / "rustbin-0.4.0.dist-info").is_dir() and (closure / "bin/rustbin").is_file()
    assert (closure / "bin/rustbin").read_bytes()[:4] == b"\x7fELF"
    # The deps path keeps the backends' executables, and only the build environment has them.
    build_env = Path(data["deps"]) / "venvseal-build-env"
    assert (build_env / "bin/uv-build").is_file()
    assert all((build_env / "bin" / tool).is_file() for tool in ("cmake", "ninja", "maturin"))
    assert not (Path(data["deps"]) / "bin").exists()
    # The entry point, the compiled extensions and the program, run as the builder.
    ran = builder.venvseal("run", project, "--store", builder.store, "--", "@out@/bin/member-hello")
    assert (ran.code, ran.out.strip()) == (0, "hello"), ran.err
    ran = builder.venvseal("run", project, "--store", builder.store, "--", "@python@", "-c",
                           "import native; print(native.answer())")
    assert (ran.code, ran.out.strip()) == (0, "42"), ran.err
    ran = builder.venvseal("run", project, "--store", builder.store, "--", "@python@", "-c",
                           "import rusty; print(rusty.lib.answer() + 1)")
    assert (ran.code, ran.out.strip()) == (0, "43"), ran.err
    ran = builder.venvseal("run", project, "--store", builder.store, "--", "@out@/bin/rustbin")
    assert (ran.code, ran.out.strip()) == (0, "hello from rust"), ran.err
    # A local cargo build's target/ is no source: the next build reuses the closure.
    debris = write(project / "packages/rusty/target/release/librusty.so", "a local build")
    if builder.user is not None:
        builder.user.own(debris.parents[1])
    again = builder.build(project)
    assert again.code == 0, again.err
    assert (again.json()["path"], again.json()["reused"]) == (data["path"], True)
