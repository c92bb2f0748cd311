"""Normalising a venv: clean-up, pyvenv.cfg, ELF, references and RECORD upkeep."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest

from venvseal.deps.normalise import (
    PYTHON_HOME_PLACEHOLDER,
    NormaliseError,
    NormaliseReport,
    canonical_pyvenv_cfg,
    hash_normalised,
    normalise_venv,
    remove_conflicts,
)
from venvseal.deps.strip import GuardedStrip, guarded
from venvseal.elf.refs import DEFAULT_BUILD_ROOT
from venvseal.process import run
from venvseal.toolchain.sandbox import OUT_DIR

needs_toolchain = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("strip") is None,
    reason="needs the host gcc and binutils (Debian: apt-get install gcc binutils)",
)

UV_PYVENV_CFG = (
    "home = /usr/bin\nimplementation = CPython\nuv = 0.13.9\nversion_info = 3.14.10\n"
    "include-system-site-packages = false\nprompt = authentik\n"
)
CANONICAL_PYVENV_CFG = (
    f"home = {PYTHON_HOME_PLACEHOLDER}\nimplementation = CPython\nversion_info = 3.14.10\n"
    "include-system-site-packages = false\n"
)
SITE = Path("lib/python3.14/site-packages")
C_SOURCE = 'const char *venvseal_source = __FILE__;\nint answer(void) { return 42; }\n'


def normalise(venv: Path, *, strip: GuardedStrip, build_root: bytes = DEFAULT_BUILD_ROOT,
              venv_path: PurePosixPath = OUT_DIR) -> NormaliseReport:
    """The deps stage's normalisation: normalise_venv, then the NAR hash's read of every
    file completes it (the references in files it did not edit; unsealed here)."""
    report = normalise_venv(venv, strip=strip, build_root=build_root, venv_path=venv_path)
    return hash_normalised(venv, report, seal_mtime=None, build_root=build_root)[1]


def host_strip(paths: Sequence[Path]) -> None:
    """The test's stand-in for the sandboxed strip: the host's binutils."""
    run(["strip", "--strip-debug", "--", *map(str, paths)], what="strip --strip-debug")


def record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def build_extension(build_root: Path, out: Path) -> None:
    """Compile C_SOURCE from a random sdist directory under ``build_root``, as uv does."""
    sdists = build_root / "cache" / "sdists-v11"
    sdists.mkdir(parents=True, exist_ok=True)
    src = Path(tempfile.mkdtemp(dir=sdists)) / "src"
    write(src / "ext.c", C_SOURCE)
    out.parent.mkdir(parents=True, exist_ok=True)
    # An absolute source path puts the random directory in .rodata too, not only in DWARF.
    run(["gcc", "-g", "-shared", "-fPIC", "-Wl,--build-id", "-o", str(out), str(src / "ext.c")],
        what="gcc", cwd=src)


def make_venv(venv: Path, build_root: Path | None) -> None:
    """A venv as uv leaves it: bin/, markers, bytecode, a dist-info with a full RECORD."""
    site = venv / SITE
    write(venv / "pyvenv.cfg", UV_PYVENV_CFG)
    write(venv / ".lock", "")
    write(venv / "CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n")
    write(venv / ".gitignore", "*")
    write(venv / "bin" / "activate", f"VIRTUAL_ENV={venv}\n")
    write(venv / "bin" / "demo", f"#!{venv}/bin/python\nimport demo\n")
    (venv / "bin" / "python").symlink_to("/usr/bin/python3.14")
    (venv / "lib64").symlink_to("lib")
    root = build_root or Path("/venvseal-build")
    write(site / "demo" / "__init__.py", f'SRC = "{root}/src/demo"\n')
    write(site / "demo" / "__pycache__" / "__init__.cpython-314.pyc", b"\xcb\x0d\x0d\x0a")
    write(site / "demo" / "old.pyo", b"\0")
    write(site / "demo" / "fake.so", "INPUT(-lfoo)\n")
    write(site / "demo" / "a,b.txt", "comma in the name\n")
    write(site / "demo" / "bin" / "keep.txt", "not the venv's bin/\n")
    write(site / "demo" / ".gitignore", "kept: only the root one is uv's\n")
    if build_root is not None:
        build_extension(build_root, site / "demo" / "_ext.cpython-314-x86_64-linux-gnu.so")
    write_record(venv, site / "demo-1.0.dist-info")


def write_record(venv: Path, dist_info: Path) -> None:
    write(dist_info / "METADATA", "Metadata-Version: 2.4\nName: demo\nVersion: 1.0\n")
    # bin/demo is the launcher of an entry point: uv's, made per run.
    write(dist_info / "entry_points.txt", "[console_scripts]\ndemo = demo:main\n")
    site = dist_info.parent
    files = [p for p in sorted(site.rglob("*")) if p.is_file() and p.name != "RECORD"]
    files += [venv / "bin" / "demo"]
    rows = [[os.path.relpath(p, site), record_hash(p), str(p.stat().st_size)] for p in files]
    rows.append(["demo-1.0.dist-info/RECORD", "", ""])
    with open(dist_info / "RECORD", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Everything a NAR records: type, executable bit, content or link target, per path."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.fsencode(os.readlink(path)))
            elif stat.S_ISDIR(mode):
                out[rel] = ("dir", b"")
            else:
                out[rel] = ("exe" if mode & stat.S_IXUSR else "file", path.read_bytes())
    return out


@pytest.mark.parametrize(("text", "expected"), [
    (UV_PYVENV_CFG, CANONICAL_PYVENV_CFG),
    (UV_PYVENV_CFG.replace("\n", "\r\n"), CANONICAL_PYVENV_CFG),
    # site.py semantics: keys are case-insensitive, spacing is free, the last one wins.
    ("Home=/opt/py/bin\nversion_info=3.14.0\nVERSION_INFO = 3.14.10\nextra = x\n"
     "implementation =CPython\ninclude-system-site-packages= false\n", CANONICAL_PYVENV_CFG),
    ("home = /usr/bin\nversion_info = 3.14.10\n",
     f"home = {PYTHON_HOME_PLACEHOLDER}\nversion_info = 3.14.10\n"),
])
def test_canonical_pyvenv_cfg(text: str, expected: str) -> None:
    assert canonical_pyvenv_cfg(text) == expected


def test_not_a_venv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NormaliseError, match="not a virtual environment"):
        normalise(tmp_path, strip=guarded(host_strip))


def test_clean_up_and_record_upkeep(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv, build_root=None)
    record = venv / SITE / "demo-1.0.dist-info" / "RECORD"
    before = record.read_text().splitlines()
    calls: list[list[Path]] = []

    report = normalise(venv, strip=guarded(lambda paths: calls.append(list(paths))))

    assert calls == []  # no ELF files: strip is not run
    assert sorted(p.name for p in venv.iterdir()) == ["lib", "lib64", "pyvenv.cfg"]
    assert (venv / "pyvenv.cfg").read_bytes() == CANONICAL_PYVENV_CFG.encode()
    site = venv / SITE
    assert not (site / "demo" / "__pycache__").exists()
    assert not (site / "demo" / "old.pyo").exists()
    assert (site / "demo" / "bin" / "keep.txt").exists()
    assert (site / "demo" / ".gitignore").exists()
    assert (site / "demo" / "fake.so").read_text() == "INPUT(-lfoo)\n"
    assert (site / "demo" / "__init__.py").read_text() == f'SRC = "/{"e" * 23}"\n'

    # bin/activate, bin/demo, bin/python, .lock, CACHEDIR.TAG, .gitignore, .pyc, .pyo
    assert report.removed_files == 8
    assert report.references.distinct_count == 1
    assert report.files_changed == 1
    assert report.records_rewritten == 1

    after = record.read_text().splitlines()
    kept = [line for line in before
            if not path_of(line).startswith("../../../bin/")
            and not path_of(line).endswith((".pyc", ".pyo"))]
    assert len(kept) == len(before) - 3
    assert [path_of(line) for line in after] == [path_of(line) for line in kept]
    changed = [(old, new) for old, new in zip(kept, after, strict=True) if old != new]
    assert [path_of(old) for old, _ in changed] == ["demo/__init__.py"]
    assert any(line.startswith('"demo/a,b.txt",') for line in after)
    assert after[-1] == "demo-1.0.dist-info/RECORD,,"
    assert_record_matches(record)


def path_of(line: str) -> str:
    return next(csv.reader([line]))[0]


def assert_record_matches(record: Path) -> None:
    """Every file RECORD lists exists with the recorded hash and size."""
    site = record.parent.parent
    with open(record, newline="") as f:
        rows = list(csv.reader(f))
    assert rows
    for path, digest, size in rows:
        target = site / path
        assert target.is_file(), path
        if path.endswith(".dist-info/RECORD"):
            assert (digest, size) == ("", "")
        else:
            assert (digest, int(size)) == (record_hash(target), target.stat().st_size), path


@needs_toolchain
def test_two_builds_normalise_to_the_same_bytes(tmp_path: Path) -> None:
    build_root = tmp_path / "vb"
    prefix = os.fsencode(build_root) + b"/"
    venvs = [tmp_path / "a", tmp_path / "b"]
    for venv in venvs:
        make_venv(venv, build_root)
    so = SITE / "demo" / "_ext.cpython-314-x86_64-linux-gnu.so"
    assert (venvs[0] / so).read_bytes() != (venvs[1] / so).read_bytes()
    calls: list[list[Path]] = []

    def strip(paths: Sequence[Path]) -> None:
        calls.append(list(paths))
        host_strip(paths)

    reports = [normalise(venv, strip=guarded(strip), build_root=prefix) for venv in venvs]

    assert calls == [[venvs[0] / so], [venvs[1] / so]]
    assert tree(venvs[0]) == tree(venvs[1])
    for venv, report in zip(venvs, reports, strict=True):
        data = (venv / so).read_bytes()
        assert prefix not in data and b"sdists-v11" not in data
        assert report.stripped_elf == 1
        assert report.files_changed == 2  # the extension and __init__.py
        assert_record_matches(venv / SITE / "demo-1.0.dist-info" / "RECORD")


@needs_toolchain
def test_references_are_found_as_they_are_after_clean_up_and_strip(tmp_path: Path) -> None:
    """Each file is read once for references (the edited ones as they are edited, the rest
    as they are hashed); what is deleted or edited before they are replaced (litter,
    conflicting files, pyvenv.cfg, the stripped ELF file's DWARF) counts as it is then, as
    a scan of the whole venv at that point would find it."""
    build_root = tmp_path / "vb"
    venv = tmp_path / "venv"
    make_venv(venv, build_root)
    site = venv / SITE
    write(venv / "pyvenv.cfg", f"home = {build_root}/python/bin\nversion_info = 3.14.0\n")
    (site / "demo" / "link").symlink_to(f"{build_root}/src/demo/data")
    write(site / "demo" / "__pycache__" / "extra.cpython-314.pyc", f"{build_root}/litter")
    write(site / "demo" / "conflict.txt", f"{build_root}/either")
    for dist, digest in (("a", "AAAA"), ("b", "BBBB")):
        write(site / f"{dist}-1.0.dist-info" / "RECORD", f"demo/conflict.txt,sha256={digest},9\n")

    report = normalise(venv, strip=guarded(host_strip),
                            build_root=os.fsencode(build_root) + b"/")

    so = SITE / "demo" / "_ext.cpython-314-x86_64-linux-gnu.so"
    by_file: dict[Path, list[str]] = {}
    for ref in report.references.references:
        for file in ref.files:
            by_file.setdefault(file, []).append(ref.text.decode())
    assert by_file.keys() == {SITE / "demo" / "__init__.py", SITE / "demo" / "link", so}
    assert by_file[SITE / "demo" / "link"] == [f"{build_root}/src/demo/data"]
    assert by_file[SITE / "demo" / "__init__.py"] == [f"{build_root}/src/demo"]
    # Before strip, DWARF named the sdist folder too; after it, only __FILE__ in .rodata.
    assert len(by_file[so]) == 1 and by_file[so][0].endswith("/src/ext.c")
    target = f"{build_root}/src/demo/data"
    assert os.readlink(site / "demo" / "link") == "/" + "e" * (len(target) - 1)


def test_hard_linked_cache_files_are_not_modified(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv, build_root=None)
    cached = write(tmp_path / "cache" / "mod.py", "ROOT = '/venvseal-build/cache/x'\n")
    os.link(cached, venv / SITE / "demo" / "mod.py")
    normalise(venv, strip=guarded(host_strip))
    assert cached.read_text() == "ROOT = '/venvseal-build/cache/x'\n"
    assert (venv / SITE / "demo" / "mod.py").read_text() == f"ROOT = '/{'e' * 22}'\n"


@needs_toolchain
def test_a_hard_linked_extension_is_stripped_in_a_copy_of_its_own(tmp_path: Path) -> None:
    """strip writes through hard links: the file is unlinked from uv's cache first."""
    build_root = tmp_path / "vb"
    venv = tmp_path / "venv"
    make_venv(venv, build_root)
    so = venv / SITE / "demo" / "_ext.cpython-314-x86_64-linux-gnu.so"
    cached = tmp_path / "cache-copy"
    os.link(so, cached)
    before = cached.read_bytes()
    normalise(venv, strip=guarded(host_strip), build_root=os.fsencode(build_root) + b"/")
    assert cached.read_bytes() == before and so.read_bytes() != before


def test_record_keeps_crlf_and_unknown_lines(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv, build_root=None)
    record = venv / SITE / "demo-1.0.dist-info" / "RECORD"
    text = record.read_text().replace("\n", "\r\n") + "demo/missing.txt,,\r\n"
    record.write_bytes(text.encode())
    normalise(venv, strip=guarded(host_strip))
    new = record.read_bytes().decode()
    assert new.endswith("demo-1.0.dist-info/RECORD,,\r\ndemo/missing.txt,,\r\n")
    assert "\n" not in new.replace("\r\n", "")
    init_line = next(line for line in new.split("\r\n") if line.startswith("demo/__init__.py,"))
    assert init_line.split(",")[1] == record_hash(venv / SITE / "demo" / "__init__.py")


def test_files_two_distributions_ship_differently_are_removed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.14" / "site-packages"
    write(venv / "pyvenv.cfg", "home = /usr/bin\nversion_info = 3.14.0\n")
    for dist, makefile in (("pyrad-2.5.4", "pyrad docs"), ("django_tenants-3.10.1", "tenants")):
        write(site / "docs" / "Makefile", makefile)  # the later install wins, as in uv
        write(site / dist.split("-")[0] / "__init__.py", "")
        write(site / "shared_ns" / "__init__.py", "# same in both\n")
        info = site / f"{dist}.dist-info"
        write(info / "METADATA", f"Name: {dist}\n")
        rows = ["docs/Makefile", f"{dist.split('-')[0]}/__init__.py", "shared_ns/__init__.py",
                f"{info.name}/METADATA"]
        hashes = {"docs/Makefile": makefile.encode()}
        lines = []
        for row in rows:
            data = hashes.get(row, (site / row).read_bytes())
            lines.append(f"{row},{record_hash_of(data)},{len(data)}")
        write(info / "RECORD", "\n".join([*lines, f"{info.name}/RECORD,,"]) + "\n")
    conflicts = remove_conflicts(venv)
    assert [(c.path, c.distributions) for c in conflicts] == [
        ("lib/python3.14/site-packages/docs/Makefile", ("django_tenants", "pyrad"))]
    assert "with different contents" in str(conflicts[0])
    assert not (site / "docs" / "Makefile").exists()
    assert (site / "shared_ns" / "__init__.py").exists()  # same content twice: kept


def record_hash_of(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"
