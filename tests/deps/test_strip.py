"""Stripping debug info never breaks an ELF file (issue 12): real gcc, strip and ld.so."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest
from support import PYTHON, venvseal
from support.apps import make_app

from venvseal.deps.stage import guarded_strip
from venvseal.deps.strip import GuardedStrip, guarded, has_debug_info, strip_safely
from venvseal.toolchain import sandbox
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec, fixed_env

LOADER = "/lib64/ld-linux-x86-64.so.2"
SOURCE = "int answer(void) { return 42; }\n"


def compile_lib(dest: Path, *flags: str) -> Path:
    src = dest.with_suffix(".c")
    src.write_text(SOURCE)
    subprocess.run(["gcc", "-shared", "-fPIC", *flags, "-o", str(dest), str(src)], check=True)
    src.unlink()
    return dest


def host_strip(files: Sequence[Path]) -> None:
    subprocess.run(["strip", "--strip-debug", "--", *map(str, files)], check=True)


def host_accepts(files: Sequence[Path]) -> set[Path]:
    """What the host's loader accepts: ``--verify`` exits 2 for a shared object it can map."""
    return {f for f in files
            if subprocess.run([LOADER, "--verify", str(f)], capture_output=True,
                              check=False).returncode in (0, 2)}


def misaligning_strip(files: Sequence[Path]) -> None:
    """strip, then do to the program headers what binutils 2.40 does to numpy's OpenBLAS."""
    host_strip(files)
    for f in files:
        data = bytearray(f.read_bytes())
        (phoff,) = struct.unpack_from("<Q", data, 0x20)  # e_phoff, ELF64
        struct.pack_into("<Q", data, 0x20, phoff + 1)
        f.write_bytes(bytes(data))


def test_has_debug_info(tmp_path: Path) -> None:
    assert has_debug_info(compile_lib(tmp_path / "libg.so", "-g"))
    assert not has_debug_info(compile_lib(tmp_path / "libplain.so"))
    (tmp_path / "not-elf.so").write_bytes(b"\x7fELF garbage")
    assert not has_debug_info(tmp_path / "not-elf.so")


def test_only_files_with_debug_info_are_stripped(tmp_path: Path) -> None:
    with_debug = compile_lib(tmp_path / "libg.so", "-g")
    plain = compile_lib(tmp_path / "libplain.so")
    plain_bytes = plain.read_bytes()
    handed: list[Path] = []

    def strip(files: Sequence[Path]) -> None:
        handed.extend(files)
        host_strip(files)

    result = strip_safely([with_debug, plain], strip=guarded(strip, host_accepts, tmp_path))
    assert handed == [with_debug]
    assert result.stripped == (with_debug,) and result.kept == ()
    assert not has_debug_info(with_debug)
    assert plain.read_bytes() == plain_bytes
    assert host_accepts([with_debug, plain]) == {with_debug, plain}


def test_a_file_strip_would_break_is_kept_as_it_was(tmp_path: Path) -> None:
    lib = compile_lib(tmp_path / "libg.so", "-g")
    original = lib.read_bytes()
    result = strip_safely([lib], strip=guarded(misaligning_strip, host_accepts, tmp_path))
    assert result.kept == (lib,) and result.stripped == ()
    assert lib.read_bytes() == original
    assert host_accepts([lib]) == {lib}
    assert [p.name for p in tmp_path.iterdir()] == ["libg.so"]  # no backup left behind


def test_a_file_the_loader_refused_before_is_not_kept_back(tmp_path: Path) -> None:
    # Only what the loader accepted before is guarded: a file it never accepted (another
    # architecture, a corrupt upstream file) is stripped like any other.
    lib = compile_lib(tmp_path / "libg.so", "-g")
    result = strip_safely([lib], strip=guarded(host_strip, lambda _files: set(), tmp_path))
    assert result.stripped == (lib,) and result.kept == ()


# A strip that does what misaligning_strip does, for the sandbox's PATH (TOOLS_DIR is first).
MISALIGNING_STRIP = """#!/usr/bin/python3
import struct, subprocess, sys
subprocess.run(["/usr/bin/strip", *sys.argv[1:]], check=True)
for name in sys.argv[sys.argv.index("--") + 1:]:
    with open(name, "r+b") as f:
        (phoff,) = struct.unpack_from("<Q", f.read(0x28), 0x20)
        f.seek(0x20)
        f.write(struct.pack("<Q", phoff + 1))
"""


def sandboxed(tmp_path: Path, *, misaligning: bool) -> tuple[GuardedStrip, Path, Path, Path]:
    """The guarded strip the deps stage runs (host root, in the sandbox; with a misaligning
    ``strip`` first on its PATH), a -g shared library and a -g object file in its venv
    folder, and its scratch folder: (strip, library, object, scratch)."""
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    (out / "lib").mkdir(parents=True)
    scratch.mkdir()
    lib = compile_lib(out / "lib" / "libg.so", "-g")
    obj = compile_lib(out / "lib" / "object.o", "-g", "-c")  # the loader never accepts it
    mounts = [Mount(host=out, target=sandbox.OUT_DIR, writable=True)]
    if misaligning:
        fake = tmp_path / "strip"
        fake.write_text(MISALIGNING_STRIP)
        fake.chmod(0o755)
        mounts.append(Mount(host=fake, target=sandbox.TOOLS_DIR / "strip"))
    spec = SandboxSpec(root=Path("/"), mounts=tuple(mounts),
                       env=fixed_env((PurePosixPath("/usr/bin"), PurePosixPath("/bin"))))
    return guarded_strip(Sandbox.locate(), spec, out, scratch), lib, obj, scratch


def test_the_stage_strips_in_one_sandbox(tmp_path: Path) -> None:
    strip, lib, obj, scratch = sandboxed(tmp_path, misaligning=False)
    assert strip([lib, obj]) == set()
    assert not has_debug_info(lib) and not has_debug_info(obj)
    assert host_accepts([lib]) == {lib}
    assert list(scratch.iterdir()) == []  # the originals' folder is gone


def test_the_stage_puts_back_what_strip_broke(tmp_path: Path) -> None:
    strip, lib, obj, scratch = sandboxed(tmp_path, misaligning=True)
    original, original_obj = lib.read_bytes(), obj.read_bytes()
    assert strip([lib, obj]) == {lib}
    assert lib.read_bytes() == original and has_debug_info(lib)
    # What the loader never accepted is not guarded: stripped (and here misaligned) anyway.
    assert obj.read_bytes() != original_obj and not has_debug_info(obj)
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_numpy_2_survives_the_deps_stage(tmp_path: Path) -> None:
    # numpy 2.x's manylinux wheel: OpenBLAS and libgfortran in numpy.libs have no debug info,
    # and Debian 12's strip made them unloadable.
    project = make_app(tmp_path / "app", tmp_path / "lock-cache",
                       dependencies=("numpy==2.2.6",), member=False)
    run = venvseal("--json", "deps", "--store", tmp_path / "store", "--uv-cache",
                   tmp_path / "uv-cache", "--update-hash", project)
    assert run.code == 0, run.err
    venv = Path(run.json()["path"])
    site = venv / "lib/python3.11/site-packages"
    libs = sorted((site / "numpy.libs").iterdir())
    assert {p.name.split("-")[0] for p in libs} >= {"libscipy_openblas64_", "libgfortran"}
    assert host_accepts(libs) == set(libs)
    assert run.json()["normalise"]["unstripped"] == []
    done = subprocess.run([PYTHON, "-B", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import numpy as np; a = np.arange(9.0).reshape(3, 3); "
                           "print(int((a @ a).sum()))", str(site)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "486"
