"""What the runtime closure adds beyond the dynamic loader's view, on the host's real root:
a library's Debian package (plugins, data), .note.dlopen, the [verify] checks' trace,
libraries loaded by name from Python, and the image's PATH."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from elf.test_dlopen import with_note

from venvseal.oci.runtime import RuntimeClosure, runtime_closure
from venvseal.recipe import parse
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.sandbox import Sandbox
from venvseal.toolchain.trace import write_record

P = PurePosixPath
HOST_PYTHON = "/usr/bin/python3.11"
LIBZ = Path("/usr/lib/x86_64-linux-gnu/libz.so.1")
PLUGINS = "/usr/lib/x86_64-linux-gnu/libmariadb3/plugin/"
SASL = "/usr/lib/x86_64-linux-gnu/sasl2/"


def closure_dir(tmp_path: Path) -> Path:
    closure = tmp_path / "store" / ("0" * 32 + "-grown-1.0")
    (closure / "bin").mkdir(parents=True)
    (closure / "lib").mkdir()
    for name in ("python", "python3"):
        (closure / "bin" / name).symlink_to(HOST_PYTHON)
    return closure


def needing(closure: Path, name: str, soname: str) -> Path:
    """An extension-like library in the closure whose DT_NEEDED names ``soname``."""
    lib = closure / "lib" / name
    shutil.copyfile(LIBZ, lib)
    subprocess.run(["patchelf", "--add-needed", soname, str(lib)], check=True)
    return lib


def grow(tmp_path: Path, closure: Path, **toolchain_table: object) -> RuntimeClosure:
    rec = parse.parse_recipe({"app": {"name": "grown", "version": "1.0"},
                               "toolchain": {"root": "/", "python": HOST_PYTHON,
                                             **toolchain_table}},
                              file=tmp_path / "venvseal.toml")
    return runtime_closure(rec, toolchain.resolve(rec.toolchain), closure,
                           runner=Sandbox.locate())


def reasons(found: RuntimeClosure) -> dict[str, str]:
    return {str(f.path): f.why for f in found.files}


def test_a_library_brings_its_packages_plugins_but_no_docs(tmp_path: Path) -> None:
    closure = closure_dir(tmp_path)
    needing(closure, "_mysql.so", "libmariadb.so.3")
    found = grow(tmp_path, closure)
    why = reasons(found)
    for plugin in ("caching_sha2_password.so", "client_ed25519.so", "dialog.so"):
        assert why[PLUGINS + plugin].startswith("package libmariadb3 of /")
        assert why[PLUGINS + plugin].endswith("lib/x86_64-linux-gnu/libmariadb.so.3")
    # glibc's package: its gconv modules (iconv), nothing of its documentation.
    assert why["/usr/lib/x86_64-linux-gnu/gconv/CP1252.so"].startswith("package libc6 of ")
    assert not [p for p in why if p.startswith(("/usr/share/doc", "/usr/share/man",
                                                "/usr/share/locale/", "/usr/include"))]
    assert not [p for p in why if p.endswith((".a", ".pc", ".h"))]


def test_a_dlopen_note_brings_the_library_it_names(tmp_path: Path) -> None:
    closure = closure_dir(tmp_path)
    lib = with_note(tmp_path, [{"feature": "sasl", "soname": ["libnope.so.9", "libsasl2.so.2"]},
                               {"feature": "x", "priority": "required",
                                "soname": ["libnothing.so.1"]}])
    shutil.copyfile(lib, closure / "lib/libnoted.so.1")
    found = grow(tmp_path, closure)
    why = reasons(found)
    noted = f"/venvseal/store/{closure.name}/lib/libnoted.so.1"
    assert why["/usr/lib/x86_64-linux-gnu/libsasl2.so.2"] == f"dlopen note of {noted}"
    assert why["/usr/lib/x86_64-linux-gnu/libsasl2.so.2.0.25"] == f"dlopen note of {noted}"
    assert any("may dlopen libnothing.so.1" in n for n in found.notes)


def test_what_the_checks_opened_comes_in_with_its_package(tmp_path: Path) -> None:
    closure = closure_dir(tmp_path)
    write_record(closure, {SASL + "libplain.so": "verify.commands[0]",
                           "/usr/share/zoneinfo/UTC": "verify.imports",
                           "/usr/lib/python3.11/os.py": "verify.imports",
                           "/etc/shadow": "verify.commands[1]",
                           "/no/longer/here.so": "verify.imports"})
    found = grow(tmp_path, closure)
    why = reasons(found)
    assert why[SASL + "libplain.so"] == "opened by verify.commands[0]"
    assert why[SASL + "libdigestmd5.so"] == f"package libsasl2-modules of {SASL}libplain.so"
    assert why["/usr/share/zoneinfo/UTC"] == "opened by verify.imports"
    assert why["/usr/lib/python3.11/os.py"] == "stdlib"  # a first reason sticks
    assert "/etc/shadow" not in why
    assert any(n.startswith("/etc/shadow (opened by verify.commands[1]) is left out")
               for n in found.notes)
    assert not any("were not traced" in n for n in found.notes)


def test_an_untraced_closure_says_so(tmp_path: Path) -> None:
    found = grow(tmp_path, closure_dir(tmp_path))
    assert any("checks were not traced" in n for n in found.notes)


def test_libraries_loaded_by_name_from_python(tmp_path: Path) -> None:
    closure = closure_dir(tmp_path)
    site = closure / "lib/python3.11/site-packages/magicish"
    site.mkdir(parents=True)
    (site / "loader.py").write_text("import ctypes.util\nctypes.util.find_library('magic')\n"
                                    "ctypes.CDLL('libnotinroot.so.7')\n")
    found = grow(tmp_path, closure)
    why = reasons(found)
    rel = "lib/python3.11/site-packages/magicish/loader.py"
    assert why["/usr/lib/x86_64-linux-gnu/libmagic.so.1"] == f"loaded by name in {rel}"
    assert why["/etc/magic"].startswith("package libmagic1 of ")
    assert any("loads the library 'libnotinroot.so.7' by name" in n and "[image] include" in n
               for n in found.notes)


@pytest.mark.parametrize(("path", "kept"), [
    (["/usr/bin", "/bin"], ("/usr/bin", "/bin")),
    (["/usr/local/bin", "/usr/bin", "/venvseal-build/tools", "/no/such/dir"], ("/usr/bin",)),
])
def test_the_image_path_keeps_the_folders_the_image_has(tmp_path: Path, path: list[str],
                                                        kept: tuple[str, ...]) -> None:
    found = grow(tmp_path, closure_dir(tmp_path), path=path)
    assert found.path == tuple(map(P, kept))


@pytest.mark.parametrize(("image_table", "folders", "expected"), [
    ({}, None, "@out@/bin:/usr/bin:/bin:/build/only"),  # nothing computed: toolchain.path
    ({}, ("/usr/bin",), "@out@/bin:/usr/bin"),
    ({"path": ["@out@/bin", "/opt/tool/bin"]}, ("/usr/bin",), "@out@/bin:/opt/tool/bin"),
    ({"env": {"PATH": "/x"}}, ("/usr/bin",), "/x"),
])
def test_the_image_path(tmp_path: Path, image_table: dict[str, object],
                        folders: tuple[str, ...] | None, expected: str) -> None:
    from venvseal.oci.image import ImageConfig, image_config

    rec = parse.parse_recipe({"app": {"name": "grown", "version": "1.0"},
                               "toolchain": {"path": ["/usr/bin", "/bin", "/build/only"]},
                               "image": image_table}, file=tmp_path / "venvseal.toml")
    out = "/venvseal/store/" + "0" * 32 + "-grown-1.0"
    conf = ImageConfig.from_recipe(rec)
    if folders is not None:
        conf = dataclasses.replace(conf, path=tuple(map(P, folders)))
    config = json.loads(image_config(conf, {"out": out}, []))
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["PATH"] == expected.replace("@out@", out)
