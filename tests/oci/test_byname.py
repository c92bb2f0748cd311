"""Libraries Python code loads by name (ctypes, cffi), found in a tree of .py files and
looked up in library folders."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import pytest

from venvseal.oci.byname import ByName, candidates, find_in, scan, scan_elf

P = PurePosixPath
HOST_LIB = Path("/usr/lib/x86_64-linux-gnu")

SOURCES = {
    "magic/loader.py": "import ctypes.util\nlib = ctypes.util.find_library('magic')\n",
    "a/b.py": ('from ctypes import CDLL\nCDLL("libsasl2.so.2")\n'
               'ctypes.cdll.LoadLibrary(r"libz.so.1")\n'),
    "c.py": ("ffi.dlopen( 'sodium' )\nctypes.CDLL(name)\nctypes.WinDLL('kernel32.dll')\n"
             "find_library('Kernel32')\n"),
    "d.py": "find_library('magic')  # again: listed once, for the first file\n",
    "e.txt": "CDLL('libnot-python.so')\n",
    "f.py": "print('no loading here')\n",
}


def test_scan_finds_literal_names_once(tmp_path: Path) -> None:
    for rel, text in SOURCES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert scan(tmp_path) == [ByName("libsasl2.so.2", "a/b.py"), ByName("libz.so.1", "a/b.py"),
                              ByName("magic", "d.py"), ByName("sodium", "c.py")]


@pytest.mark.parametrize(("name", "patterns"), [
    ("magic", ("libmagic.so.[0-9]*", "libmagic.so")),
    ("libmagic", ("libmagic.so.[0-9]*", "libmagic.so")),
    ("libmagic.so.1", None),
])
def test_candidates(name: str, patterns: tuple[str, ...] | None) -> None:
    assert candidates(name) == patterns


def test_find_in_prefers_a_versioned_file(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libfoo.so", "libfoo.so.2", "libfoo.so.2.1.0", "libfoobar.so.1"):
        (lib / name).write_bytes(b"")
    folders = [(P("/empty"), tmp_path / "empty"), (P("/usr/lib"), lib)]
    assert find_in(folders, "foo") == P("/usr/lib/libfoo.so.2")
    assert find_in(folders, "libfoo.so.2.1.0") == P("/usr/lib/libfoo.so.2.1.0")
    assert find_in(folders, "libfoo.so.9") is None
    assert find_in(folders, "bar") is None
    host = [(P("/usr/lib/x86_64-linux-gnu"), HOST_LIB)]
    assert find_in(host, "z") == P("/usr/lib/x86_64-linux-gnu/libz.so.1")


def test_scan_elf_reads_names_a_program_dlopens_itself(tmp_path: Path) -> None:
    source = tmp_path / "loader.c"
    source.write_text('#include <dlfcn.h>\n'
                      'void *load(void) { return dlopen("libkadm5clnt_mit.so", RTLD_NOW); }\n'
                      'const char *other(void) { return "libpython3.14.so.1.0"; }\n'
                      'const char *packed(void) { return "x.solibkadm5srv_mit.so.1libz"; }\n'
                      'const char *not_a_library(void) { return "libfoo.txt lib.so"; }\n')
    compiled = subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "ext.so"),
                               str(source), "-lz"], capture_output=True, text=True, check=False)
    assert compiled.returncode == 0, compiled.stderr
    (tmp_path / "data.bin").write_bytes(b"libnot-elf.so.1\0")
    found = scan_elf(tmp_path, ["ext.so", "data.bin"])
    # libz.so.1 is a DT_NEEDED name (.dynstr): the loader's business, not read here.
    assert found == [ByName("libkadm5clnt_mit.so", "ext.so"),
                     ByName("libkadm5srv_mit.so.1", "ext.so"),
                     ByName("libpython3.14.so.1.0", "ext.so")]
