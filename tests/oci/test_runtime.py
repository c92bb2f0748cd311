"""The runtime closure: what a built closure needs from its toolchain root at run time.

Parsing (loader traces, shebangs) and the root walk are tested on their own. The real thing
runs the host's loader and interpreter in bubblewrap: first on a small hand-made closure
(scripts, a copied ELF library, includes), then on the bundled example, built for real; its
runtime closure plus the closure itself are copied into an empty folder that then serves as
the sandbox's whole root, where psycopg's C implementation must still load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pytest
from support import uv_lock, venvseal

from venvseal.elf.loadercheck import END_MARK, FILE_MARK, LoaderCheckError, parse_trace
from venvseal.elf.loadercheck import trace as trace_libraries
from venvseal.oci.runtime import (
    ClosureError,
    ImageConfigError,
    RootCollector,
    RuntimeClosure,
    Shebang,
    parse_shebang,
    runtime_closure,
    stdlib_skip,
)
from venvseal.recipe import files, parse
from venvseal.recipe.model import Recipe
from venvseal.store.core import STORE_DIR
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

P = PurePosixPath
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
HOST_PYTHON = P("/usr/bin/python3.11")
LOADER = P("/lib64/ld-linux-x86-64.so.2")
HOST_LIBPQ = Path("/usr/lib/x86_64-linux-gnu/libpq.so.5")
MARK, END = FILE_MARK, END_MARK

# The loader traces ---------------------------------------------------------------------------

TRACE = f"""{MARK} /venvseal/store/x-demo/lib/_psycopg.so
\tlinux-vdso.so.1 (0x00007ffd1c5f2000)
\tlibpq.so.5 => /usr/lib/x86_64-linux-gnu/libpq.so.5 (0x00007f0e0b3c2000)
\tlibbundled.so => /venvseal/store/x-demo/lib/libs/libbundled.so (0x00007f0e0b3a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e0b1e0000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e0b424000)
{END} 0
{MARK} /venvseal/store/x-demo/lib/broken.so
\tlibgone.so.1 => not found
\tlibgone.so.1 => not found
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0e0b3c2000)
{END} 1
{MARK} /venvseal/store/x-demo/lib/data.bin
{END} not-dynamic
"""
TRACED = [P("/venvseal/store/x-demo/lib/_psycopg.so"), P("/venvseal/store/x-demo/lib/broken.so"),
          P("/venvseal/store/x-demo/lib/data.bin")]


def test_trace_lists_every_loaded_path_and_every_missing_soname() -> None:
    traces = parse_trace(TRACE, TRACED)
    assert list(traces) == TRACED
    first = traces[TRACED[0]]
    assert first.libraries == (P("/usr/lib/x86_64-linux-gnu/libpq.so.5"),
                               P("/venvseal/store/x-demo/lib/libs/libbundled.so"),
                               P("/lib/x86_64-linux-gnu/libc.so.6"), LOADER)
    assert first.missing == ()
    assert traces[TRACED[1]].missing == ("libgone.so.1",)
    assert traces[TRACED[1]].libraries == (P("/lib/x86_64-linux-gnu/libm.so.6"),)
    assert traces[TRACED[2]].libraries == traces[TRACED[2]].missing == ()


@pytest.mark.parametrize(("output", "files", "message"), [
    (f"{MARK} /a.so\n\t/lib64/ld-linux-x86-64.so.2: cannot open\n{END} 127\n", ["/a.so"],
     r"the dynamic loader failed on /a.so \(exit 127\):\n.*cannot open"),
    (f"{MARK} /a.so\n{END} 0\n", ["/a.so", "/b.so"], "unexpected output .* of 2 files"),
])
def test_a_trace_that_went_wrong_is_an_error(output: str, files: list[str],
                                             message: str) -> None:
    with pytest.raises(LoaderCheckError, match=message):
        parse_trace(output, [P(f) for f in files])


# Shebangs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("head", "interpreter", "argument", "program"), [
    (b"#!/usr/bin/bash\nexec ...", "/usr/bin/bash", "", None),
    (b"#! /bin/sh -e\n", "/bin/sh", "-e", None),
    (b"#!/bin/sh\r\n", "/bin/sh", "", None),
    (b"#!/usr/bin/env\tpython3\n", "/usr/bin/env", "python3", "python3"),
    (b"#!/usr/bin/env -S python3 -u\n", "/usr/bin/env", "-S python3 -u", "python3"),
    (b"#!/usr/bin/env -Spython3 -u\n", "/usr/bin/env", "-Spython3 -u", "python3"),
    (b"#!/usr/bin/env -i LANG=C -u HOME bash\n", "/usr/bin/env", "-i LANG=C -u HOME bash",
     "bash"),
    (b"#!/usr/bin/env /opt/tool/bin/run\n", "/usr/bin/env", "/opt/tool/bin/run",
     "/opt/tool/bin/run"),
    (b"#!/venvseal/store/abc-demo-1.0.0/bin/python\n", "/venvseal/store/abc-demo-1.0.0/bin/python",
     "", None),
    (b"#!/bin/sh " + b"x" * 400, "/bin/sh", "x" * 246, None),  # the kernel reads 256 bytes
])
def test_shebangs(head: bytes, interpreter: str, argument: str, program: str | None) -> None:
    found = parse_shebang(head)
    assert found == Shebang(P(interpreter), argument)
    assert found.env_program == program


@pytest.mark.parametrize("head", [b"", b"#!\n", b"#!   \n", b"# !/bin/sh\n", b"\x7fELF\x02",
                                  b"import os\n"])
def test_not_shebangs(head: bytes) -> None:
    assert parse_shebang(head) is None


@pytest.mark.parametrize(("rel", "is_dir", "skipped"), [
    ("test", True, True), ("idlelib", True, True), ("tkinter", True, True),
    ("turtledemo", True, True), ("config-3.11-x86_64-linux-gnu", True, True),
    ("site-packages", True, True), ("dist-packages", True, True),
    ("__pycache__", True, True), ("json/__pycache__", True, True),
    ("os.pyc", False, True), ("json/decoder.pyc", False, True),
    ("lib-dynload", True, False), ("os.py", False, False), ("unittest/test", True, False),
    ("test", False, False), ("json", True, False),
])
def test_stdlib_skip(rel: str, is_dir: bool, skipped: bool) -> None:
    assert stdlib_skip(P(rel), is_dir) is skipped


# The walk of a root --------------------------------------------------------------------------

def fake_root(tmp_path: Path) -> Path:
    """A merged-/usr root with a library chain, a certificate folder and odd symlinks."""
    root = tmp_path / "root-fs"
    for name in ("usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/share/ca",
                 "etc/certs", "etc/loop"):
        (root / name).mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").symlink_to("usr/lib64")
    lib = root / "usr/lib/x86_64-linux-gnu"
    (lib / "libz.so.1.2.13").write_bytes(b"\x7fELF zlib")
    (lib / "libz.so.1").symlink_to("libz.so.1.2.13")
    (lib / "ld-linux-x86-64.so.2").write_bytes(b"\x7fELF loader")
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (root / "usr/share/ca/a.crt").write_text("A\n")
    (root / "usr/share/ca/unrelated.crt").write_text("B\n")
    certs = root / "etc/certs"
    (certs / "bundle.crt").write_text("A\nB\n")
    (certs / "a.pem").symlink_to("/usr/share/ca/a.crt")
    (certs / "1234.0").symlink_to("a.pem")
    (certs / "gone.pem").symlink_to("/usr/share/ca/removed.crt")
    (certs / "mtab").symlink_to("../../proc/self/mounts")
    (certs / "self").symlink_to(".")
    (root / "etc/escape").symlink_to("../../../../outside")
    (root / "etc/loop/a").symlink_to("b")
    (root / "etc/loop/b").symlink_to("a")
    return root


def kinds(found: RuntimeClosure) -> dict[str, str]:
    return {str(f.path): f.kind for f in found.files}


def assert_well_formed(found: RuntimeClosure) -> None:
    """Sorted, parents first and present as folders, no duplicates."""
    paths = [f.path for f in found.files]
    assert paths == sorted(paths, key=lambda p: p.parts)
    assert len(set(paths)) == len(paths)
    by_path = {f.path: f for f in found.files}
    for path in paths:
        if path.parent != P("/"):
            assert by_path[path.parent].kind == "dir", path
    assert found.size == sum(f.size for f in found.files if f.kind == "file")


def test_a_path_brings_every_symlink_on_its_way(tmp_path: Path) -> None:
    c = RootCollector(fake_root(tmp_path))
    real = c.add_path(P("/lib/x86_64-linux-gnu/libz.so.1"), "library of x")
    assert real == P("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
    c.add_path(LOADER, "dynamic loader")
    found = c.result()
    assert kinds(found) == {
        "/lib": "symlink", "/lib64": "symlink", "/usr": "dir", "/usr/lib": "dir",
        "/usr/lib/x86_64-linux-gnu": "dir",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": "file",
        "/usr/lib/x86_64-linux-gnu/libz.so.1": "symlink",
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13": "file",
        "/usr/lib64": "dir", "/usr/lib64/ld-linux-x86-64.so.2": "symlink"}
    why = {str(f.path): f.why for f in found.files}
    assert why["/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"] == "library of x"
    assert why["/usr/lib64"] == "parent"
    assert_well_formed(found)
    size = {str(f.path): f.size for f in found.files}
    assert size["/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"] == len(b"\x7fELF zlib")
    assert size["/usr/lib/x86_64-linux-gnu/libz.so.1"] == 0


def test_a_folder_is_taken_whole_with_the_targets_of_its_symlinks(tmp_path: Path) -> None:
    c = RootCollector(fake_root(tmp_path))
    assert c.add_tree(P("/etc/certs"), "include")
    found = kinds(c.result())
    assert found == {
        "/etc": "dir", "/etc/certs": "dir", "/etc/certs/1234.0": "symlink",
        "/etc/certs/a.pem": "symlink", "/etc/certs/bundle.crt": "file",
        "/etc/certs/gone.pem": "symlink",  # dangling: kept as it is, nothing to add
        "/etc/certs/mtab": "symlink",  # into /proc: the runtime's, never the host's
        "/etc/certs/self": "symlink",
        "/usr": "dir", "/usr/share": "dir", "/usr/share/ca": "dir",
        "/usr/share/ca/a.crt": "file"}  # unrelated.crt stays out
    assert_well_formed(c.result())
    assert not c.add_tree(P("/etc/nothing"), "include")


@pytest.mark.parametrize(("path", "message"), [
    ("/etc/escape", "symlink /etc/escape -> ../../../../outside in the toolchain root .* "
                    "leads outside the root"),
    ("/etc/loop/a", "/etc/loop/a in the toolchain root .*: too many levels of symlinks"),
])
def test_symlinks_that_cannot_be_kept_are_refused(tmp_path: Path, path: str,
                                                  message: str) -> None:
    with pytest.raises(ClosureError, match=message):
        RootCollector(fake_root(tmp_path)).add_path(P(path), "include")


def test_a_real_reason_replaces_parent_and_a_first_reason_sticks(tmp_path: Path) -> None:
    c = RootCollector(fake_root(tmp_path))
    c.add_path(P("/usr/share/ca/a.crt"), "include")
    c.add_path(P("/usr/share/ca"), "stdlib")
    c.add_path(P("/usr/share/ca/a.crt"), "etc")
    why = {str(f.path): f.why for f in c.result().files}
    assert why == {"/usr": "parent", "/usr/share": "parent", "/usr/share/ca": "stdlib",
                   "/usr/share/ca/a.crt": "include"}


def test_generated_files_carry_their_bytes(tmp_path: Path) -> None:
    c = RootCollector(tmp_path)  # a root without /etc
    c.record(P("/etc/passwd"), "etc", b"root:x:0:0::/:/bin/sh\n")
    etc, passwd = c.result().files
    assert (etc.path, etc.kind) == (P("/etc"), "dir")
    assert (passwd.kind, passwd.size) == ("file", 22)
    assert passwd.read_bytes() == b"root:x:0:0::/:/bin/sh\n"


# The real loader and interpreter, on a hand-made closure -------------------------------------

def host_recipe(folder: Path, **image: object) -> Recipe:
    table = {"app": {"name": "handmade", "version": "1.0"},
             "toolchain": {"root": "/", "python": str(HOST_PYTHON)}, "image": image}
    return parse.parse_recipe(table, file=folder / "venvseal.toml")


def script(path: Path, text: str, mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def bare_closure(tmp_path: Path) -> Path:
    """A closure with nothing but its python links."""
    closure = tmp_path / "store" / ("0" * 32 + "-handmade-1.0")
    (closure / "bin").mkdir(parents=True)
    for name in ("python", "python3", "python3.11"):
        (closure / "bin" / name).symlink_to(HOST_PYTHON)
    return closure


@pytest.fixture
def handmade(tmp_path: Path) -> Path:
    """A closure as assembly makes one: python links, entry scripts, an ELF library."""
    closure = bare_closure(tmp_path)
    script(closure / "bin" / "tool", f"#!{STORE_DIR}/{closure.name}/bin/python\nimport os\n")
    script(closure / "app/lifecycle/ak", "#!/usr/bin/bash\nexec python -m app \"$@\"\n")
    script(closure / "app/run", "#!/usr/bin/env sh\nexit 0\n")
    script(closure / "app/notes.pl", "#!/usr/bin/perl\n", mode=0o644)  # not executable
    (closure / "lib").mkdir()
    shutil.copyfile(HOST_LIBPQ, closure / "lib/libpq-copy.so.5")
    return closure


def host_closure(folder: Path, closure: Path, **image: object) -> RuntimeClosure:
    rec = host_recipe(folder, **image)
    return runtime_closure(rec, toolchain.resolve(rec.toolchain), closure,
                           runner=Sandbox.locate())


def resolves(found: RuntimeClosure, path: PurePosixPath) -> bool:
    """Whether ``path`` leads to a file using only the closure's own entries."""
    by_path = {f.path: f for f in found.files}
    parts, current, hops = list(path.parts[1:]), P("/"), 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            current = current.parent
            continue
        entry = by_path.get(current / name)
        if entry is None or hops > 40:
            return False
        if entry.kind != "symlink":
            current = current / name
            continue
        hops += 1
        target = P(os.readlink(entry.host))
        parts = list((target if target.is_absolute() else current / target).parts[1:]) + parts
        current = P("/")
    return current in by_path and by_path[current].kind == "file"


def test_the_handmade_closure_needs_its_interpreter_stdlib_and_libraries(
        tmp_path: Path, handmade: Path) -> None:
    found = host_closure(tmp_path, handmade, include=["/etc/ssl/certs"], user="nobody")
    assert_well_formed(found)
    by_path = {str(f.path): f for f in found.files}
    assert by_path["/usr/bin/python3.11"].why == "interpreter"
    assert by_path["/usr/lib/python3.11/os.py"].why == "stdlib"
    assert by_path["/usr/lib/python3.11/lib-dynload"].kind == "dir"
    assert "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so" in by_path
    assert not [p for p in by_path if p.endswith(".pyc") or "__pycache__" in p
                or p.startswith(("/usr/lib/python3.11/test/", "/usr/lib/python3/",
                                 "/usr/lib/python3.11/config-"))]
    assert by_path["/usr/bin/bash"].why == "script interpreter of app/lifecycle/ak"
    assert by_path["/usr/bin/env"].why == "script interpreter of app/run"
    assert by_path["/usr/bin/sh"].kind == "symlink"  # env's program, found on the PATH
    assert resolves(found, P("/usr/bin/sh"))
    assert "/usr/bin/perl" not in by_path
    for program in (P("/bin/bash"), LOADER, HOST_PYTHON, P("/usr/bin/env")):
        assert resolves(found, program), program
    # Every library the real loader loads for these files is in the closure, symlinks too.
    spec = SandboxSpec(root=Path("/"), mounts=(Mount(host=handmade,
                                                     target=STORE_DIR / handmade.name),))
    copy = STORE_DIR / handmade.name / "lib/libpq-copy.so.5"
    traces = trace_libraries([HOST_PYTHON, P("/usr/bin/bash"), copy], runner=Sandbox.locate(),
                             spec=spec)
    assert traces[copy].libraries and not traces[copy].missing
    for trace in traces.values():
        for library in trace.libraries:
            assert resolves(found, library), library
    assert any(f.why == "library of lib/libpq-copy.so.5" for f in found.files)
    assert by_path["/etc/passwd"].why == by_path["/etc/group"].why == "etc"
    assert by_path["/etc/passwd"].content is None
    assert by_path["/etc/ssl/certs/ca-certificates.crt"].why == "include"
    links = [f for f in found.files if f.kind == "symlink" and f.path.parent == P("/etc/ssl/certs")]
    assert links and all(resolves(found, link.path) for link in links)
    assert not [p for p in by_path if p.startswith(("/usr/share/doc", "/usr/bin/apt", "/home",
                                                    "/var", "/usr/include"))]
    for f in found.files:
        assert f.host == Path("/") / str(f.path).lstrip("/")
        assert (f.kind == "symlink" and f.host.is_symlink()) or os.path.exists(f.host), f
        assert f.size == (f.host.stat().st_size if f.kind == "file" else 0)
    assert by_path["/usr/lib/locale/C.utf8/LC_CTYPE"].why == "locale"
    assert 10 << 20 < found.size < 200 << 20


def test_an_included_library_brings_its_own_libraries(tmp_path: Path) -> None:
    found = host_closure(tmp_path, bare_closure(tmp_path), include=[str(HOST_LIBPQ)])
    by_path = {f.path: f for f in found.files}
    real = P(os.path.realpath(HOST_LIBPQ))
    assert by_path[P(HOST_LIBPQ)].kind == "symlink"
    assert by_path[real].why == "include"
    spec = SandboxSpec(root=Path("/"))
    trace = trace_libraries([real], runner=Sandbox.locate(), spec=spec)[real]
    assert all(resolves(found, library) for library in trace.libraries)
    assert any(f.why == f"library of {real}" for f in found.files)  # libldap, for one


@pytest.mark.skipif(not Path("/usr/bin/which.debianutils").is_file(),
                    reason="needs Debian's which, a shell script behind an alternatives link")
def test_a_script_interpreter_that_is_a_script_brings_its_own(tmp_path: Path) -> None:
    closure = bare_closure(tmp_path)
    script(closure / "app/odd", "#!/usr/bin/which\n")
    by_path = {str(f.path): f for f in host_closure(tmp_path, closure).files}
    assert by_path["/usr/bin/which"].kind == by_path["/etc/alternatives/which"].kind == "symlink"
    assert by_path["/usr/bin/which.debianutils"].why == "script interpreter of app/odd"
    assert by_path["/usr/bin/dash"].why == "script interpreter of /usr/bin/which.debianutils"
    assert by_path["/bin"].kind == "symlink"


def test_the_runtime_closure_is_deterministic(tmp_path: Path, handmade: Path) -> None:
    assert host_closure(tmp_path, handmade) == host_closure(tmp_path, handmade)


@pytest.mark.parametrize(("image", "message"), [
    ({"include": ["/etc/ssl/certs", "/no/such/folder"]},
     r"image.include\[1\]: /no/such/folder does not exist in the toolchain root /"),
    ({"user": "nosuchuser"}, "image.user: user 'nosuchuser' is not in /etc/passwd"),
    ({"user": "nobody:nosuchgroup"}, "image.user: group 'nosuchgroup' is not in /etc/group"),
])
def test_what_the_root_lacks_is_a_usage_error(tmp_path: Path, handmade: Path,
                                              image: dict[str, object], message: str) -> None:
    with pytest.raises(ImageConfigError, match=message) as err:
        host_closure(tmp_path, handmade, **image)
    assert err.value.exit_code == 2
    assert str(tmp_path / "venvseal.toml") in str(err.value)


def test_numeric_users_need_no_entry(tmp_path: Path, handmade: Path) -> None:
    assert host_closure(tmp_path, handmade, user="4242:4242").files


# The bundled example, built for real ---------------------------------------------------------

class Demo(NamedTuple):
    """The example, built once."""

    recipe: Recipe
    closure: Path
    store: Path
    cache: Path
    relinked: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    base = tmp_path_factory.mktemp("closure-demo")
    project = base / "demo"
    shutil.copytree(DEMO, project, ignore=shutil.ignore_patterns(
        "build", "result", "uv.lock", "__pycache__", "*.pyc"))
    made = subprocess.run([str(project / "make-extras-repo")], capture_output=True, text=True,
                          check=False)
    assert made.returncode == 0, made.stderr
    uv_lock(project, base / "uv-cache")
    built = venvseal("--json", "build", "--store", base / "store", "--uv-cache",
                     base / "uv-cache", "--update-hash-on-drift", project)  # docs/pinning.md
    assert built.code == 0, built.err
    return Demo(files.load_recipe(project), Path(built.json()["path"]), base / "store",
                base / "uv-cache", Path(built.json()["relinked"]))


def materialise(found: RuntimeClosure, closure: Path, image: Path, *also: Path) -> None:
    """The image's file system: runtime files at their paths, the closure (and the store
    paths ``also``) at its store path."""
    for f in found.files:
        dest = image / str(f.path).lstrip("/")
        if f.kind == "dir":
            dest.mkdir()
        elif f.kind == "symlink":
            dest.symlink_to(os.readlink(f.host))
        else:
            dest.write_bytes(f.read_bytes())
            dest.chmod(f.host.stat().st_mode & 0o7777 if f.content is None else 0o644)
    for path in (closure, *also):
        shutil.copytree(path, image / str(STORE_DIR).lstrip("/") / path.name, symlinks=True)


@pytest.mark.slow
def test_the_demo_runs_from_its_runtime_closure_alone(demo: Demo, tmp_path: Path) -> None:
    rec, closure = demo.recipe, demo.closure
    found = runtime_closure(rec, toolchain.resolve(rec.toolchain), closure,
                            runner=Sandbox.locate(), references=[demo.relinked])
    assert_well_formed(found)
    by_path = {str(f.path): f for f in found.files}
    for path in ("/usr/bin/python3.11", "/usr/lib/python3.11/os.py",
                 "/usr/lib/python3.11/lib-dynload", "/lib64", "/etc/passwd"):
        assert path in by_path, path
    for library in ("/usr/lib/x86_64-linux-gnu/libpq.so.5", "/lib/x86_64-linux-gnu/libc.so.6",
                    str(LOADER), "/usr/lib/x86_64-linux-gnu/libssl.so.3"):
        assert resolves(found, P(library)), library
    assert by_path["/usr/lib/x86_64-linux-gnu/libpq.so.5"].why.startswith(
        "library of lib/python3.11/site-packages/psycopg_c/")
    assert not [p for p in by_path if p.startswith(("/usr/share/doc", "/usr/bin/apt"))]
    for f in found.files:
        assert f.kind == "symlink" or f.host.exists(), f

    image = tmp_path / "image"
    image.mkdir()
    materialise(found, closure, image, demo.relinked)
    spec = SandboxSpec(root=image, mounts=(Mount(host=image / "venvseal/store",
                                                 target=STORE_DIR),),
                       env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
    python = str(STORE_DIR / closure.name / "bin/python")
    code = ("import django, psycopg, ssl, sqlite3, ctypes, os\n"
            "print(psycopg.pq.__impl__, os.path.exists('/usr/bin/apt'), "
            "os.path.exists('/usr/lib/python3.11/os.py'))")
    done = Sandbox.locate().run(spec, [python, "-c", code], what="python in the image's root")
    assert done.output.split() == ["c", "False", "True"]


@pytest.mark.slow
def test_closure_command_lists_the_runtime_closure(demo: Demo) -> None:
    rec, closure, store, cache, _ = demo
    run = venvseal("--json", "closure", "--store", store, "--uv-cache", cache, rec.project)
    assert run.code == 0, run.err
    data = run.json()
    assert data["path"] == str(closure)
    paths = {f["path"]: f for f in data["files"]}
    assert paths["/usr/bin/python3.11"]["why"] == "interpreter"
    assert "/usr/lib/x86_64-linux-gnu/libpq.so.5" in paths
    assert data["count"] == len(data["files"])
    assert data["size"] == sum(f["size"] for f in data["files"])
    assert data["size"] < data["root_size"]
    human = venvseal("closure", "--store", store, "--uv-cache", cache, rec.project)
    assert human.code == 0, human.err
    assert "/usr/lib/python3.11/os.py" in human.out
    assert f"{data['count']} entries" in human.out.splitlines()[-1]
