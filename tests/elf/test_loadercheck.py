"""The loader check reports every file the toolchain's loader cannot load, each with a hint
that fits why: a missing library, a damaged file (load segments not page-aligned, as
binutils 2.40's strip leaves numpy's bundled libraries; a truncated file), a missing file."""

from __future__ import annotations

import struct
from pathlib import Path, PurePosixPath

from venvseal.elf.loadercheck import MISSING_HINT, unresolved_lines
from venvseal.process import run
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

INSIDE = PurePosixPath("/venvseal-build/files")
PT_LOAD = 1


def misalign(source: Path, dest: Path) -> None:
    """A copy of ``source`` whose second PT_LOAD's file offset is off by one byte."""
    data = bytearray(source.read_bytes())
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        entry = phoff + i * phentsize
        if struct.unpack_from("<I", data, entry)[0] == PT_LOAD:
            offset = struct.unpack_from("<Q", data, entry + 8)[0]
            if offset:
                struct.pack_into("<Q", data, entry + 8, offset + 1)
                break
    dest.write_bytes(bytes(data))


def compile_files(folder: Path) -> None:
    (folder / "lib.c").write_text("int f(void) { return 1; }\n")
    (folder / "stub.c").write_text("int gone(void) { return 1; }\n")
    (folder / "user.c").write_text("int gone(void);\nint g(void) { return gone(); }\n")
    (folder / "main.c").write_text("int main(void) { return 0; }\n")
    cc = ["gcc", "-shared", "-fPIC", "-o"]
    run([*cc, str(folder / "good.so"), str(folder / "lib.c")], what="gcc")
    run([*cc, str(folder / "libgone.so"), "-Wl,-soname,libgone.so.1", str(folder / "stub.c")],
        what="gcc")
    for name in ("needs-gone-a.so", "needs-gone-b.so"):
        run([*cc, str(folder / name), str(folder / "user.c"), f"-L{folder}", "-lgone"],
            what="gcc")
    (folder / "libgone.so").unlink()
    run(["gcc", "-static", "-o", str(folder / "static"), str(folder / "main.c")], what="gcc")
    misalign(folder / "good.so", folder / "misaligned-a.so")
    misalign(folder / "good.so", folder / "misaligned-b.so")
    (folder / "truncated.so").write_bytes((folder / "good.so").read_bytes()[:3000])


def test_every_failing_file_is_reported_with_a_hint_that_fits(tmp_path: Path) -> None:
    compile_files(tmp_path)
    names = ["good.so", "static", "needs-gone-a.so", "needs-gone-b.so", "misaligned-a.so",
             "misaligned-b.so", "truncated.so", "absent.so"]
    spec = SandboxSpec(root=Path("/"), mounts=(Mount(host=tmp_path, target=INSIDE),))
    report = unresolved_lines([INSIDE / n for n in names], [], runner=Sandbox.locate(),
                              spec=spec)
    assert report is not None
    lines = report.splitlines()
    assert lines[0] == "the dynamic loader cannot load 6 ELF file(s):"
    assert f"  {INSIDE}/needs-gone-a.so -> libgone.so.1" in lines
    assert f"  {INSIDE}/needs-gone-b.so -> libgone.so.1" in lines
    for name in ("misaligned-a.so", "misaligned-b.so"):
        assert f"  {INSIDE}/{name}: ELF load command address/offset not page-aligned" in lines
    assert any(line.startswith(f"  {INSIDE}/truncated.so: ") for line in lines), report
    assert f"  {INSIDE}/absent.so: no such file inside the sandbox" in lines
    assert not any("good.so" in line or "static" in line for line in lines)
    hints = [line for line in lines if line.startswith("- ")]
    assert f"- {MISSING_HINT}" in hints
    assert any(h.startswith("- damaged ELF file(s)") for h in hints)
    assert any(h.startswith("- file(s) missing inside the sandbox") for h in hints)
    assert len(hints) == 3


def test_ignored_sonames_and_a_clean_tree_report_nothing(tmp_path: Path) -> None:
    compile_files(tmp_path)
    spec = SandboxSpec(root=Path("/"), mounts=(Mount(host=tmp_path, target=INSIDE),))
    files = [INSIDE / "good.so", INSIDE / "needs-gone-a.so", INSIDE / "static"]
    assert unresolved_lines(files, ["libgone.so.*"], runner=Sandbox.locate(), spec=spec) is None
