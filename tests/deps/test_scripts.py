"""What distributions ship in bin/ (.data/scripts): kept by the deps stage, their shebang a
placeholder, put back into the closure's bin/ by the assembly."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import shutil
from pathlib import Path, PurePosixPath

import pytest
from support import write

from deps.test_normalise import normalise
from venvseal import fsutil
from venvseal.assemble.entrypoints import EntryPointError, link_shipped
from venvseal.assemble.forest import Forest
from venvseal.deps import scripts
from venvseal.deps.strip import guarded

SITE = "lib/python3.11/site-packages"
PYTHON = "/venvseal/store/0-app/bin/python"  # the closure's, as the assembly names it
PROGRAM = Path("/usr/bin/true")  # an ELF program with a GNU build-id, as maturin's


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def record_rows(record: Path) -> dict[str, tuple[str, str]]:
    with open(record, newline="") as f:
        return {row[0]: (row[1], row[2]) for row in csv.reader(f) if row}


def install(venv: Path, dist: str, files: dict[str, bytes], entry_points: str = "") -> Path:
    """A distribution as uv installs it: its files and a RECORD listing them all."""
    info = venv / SITE / f"{dist}.dist-info"
    write(info / "METADATA", f"Name: {dist}\n")
    if entry_points:
        write(info / "entry_points.txt", entry_points)
    for rel, data in files.items():
        path = venv / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o755 if rel.startswith("bin/") else 0o644)
    listed = [*files, *(str(p.relative_to(venv)) for p in sorted(info.iterdir()))]
    rows = [[os.path.relpath(venv / rel, venv / SITE), record_hash((venv / rel).read_bytes()),
             str((venv / rel).stat().st_size)] for rel in listed]
    with open(info / "RECORD", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, [f"{info.name}/RECORD", "", ""]])
    return info / "RECORD"


def make_venv(venv: Path) -> Path:
    """A venv with a program, two text scripts, a launcher and the venv's own bin/ files."""
    write(venv / "pyvenv.cfg", "home = /usr/bin\nversion_info = 3.11.2\n")
    write(venv / "bin/activate", f"VIRTUAL_ENV={venv}\n")
    (venv / "bin/python").symlink_to("/usr/bin/python3.11")
    return install(venv, "tools-1.0", {
        "bin/tool": PROGRAM.read_bytes(),
        "bin/hello-py": f"#!{venv}/bin/python\nprint('hello')\n".encode(),
        "bin/hello-sh": b"#!/bin/sh\necho hello\n",
        "bin/tools-cli": f"#!{venv}/bin/python\nimport sys\n".encode(),
        f"{SITE}/tools/__init__.py": b"",
    }, entry_points="[console_scripts]\ntools-cli = tools:main\n")


def test_the_deps_stage_keeps_what_distributions_ship_in_bin(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    record = make_venv(venv)
    report = normalise(venv, strip=guarded(lambda paths: None),
                            venv_path=PurePosixPath(venv))
    # The launcher and the venv's own files go; the program stays byte for byte.
    assert sorted(os.listdir(venv / "bin")) == ["hello-py", "hello-sh", "tool"]
    assert (venv / "bin/tool").read_bytes() == PROGRAM.read_bytes()
    assert (venv / "bin/hello-py").read_bytes() == b"#!python\nprint('hello')\n"
    assert (venv / "bin/hello-sh").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert all(os.access(venv / "bin" / name, os.X_OK) for name in os.listdir(venv / "bin"))
    # RECORD lists what is on disk: the launcher's row gone, the rewritten script rehashed.
    rows = record_rows(record)
    assert "../../../bin/tools-cli" not in rows
    for name in ("hello-py", "hello-sh", "tool"):
        data = (venv / "bin" / name).read_bytes()
        assert rows[f"../../../bin/{name}"] == (record_hash(data), str(len(data)))
    assert report.removed_files == 3  # activate, python, tools-cli
    assert report.files_changed == 1


def test_a_venv_without_such_files_loses_bin_as_before(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    write(venv / "pyvenv.cfg", "home = /usr/bin\nversion_info = 3.11.2\n")
    write(venv / "bin/activate", "")
    install(venv, "cli-1.0", {"bin/cli": b"#!/x/bin/python\n"},
            entry_points="[gui_scripts]\ncli = cli:main\n")
    normalise(venv, strip=guarded(lambda paths: None))
    assert sorted(os.listdir(venv)) == ["lib", "pyvenv.cfg"]


def test_a_script_linked_from_the_cache_is_not_changed_there(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    cached = tmp_path / "cache-hello-py"
    os.link(venv / "bin/hello-py", cached)
    normalise(venv, strip=guarded(lambda paths: None), venv_path=PurePosixPath(venv))
    assert cached.read_bytes().startswith(f"#!{venv}/bin/python\n".encode())
    assert (venv / "bin/hello-py").read_bytes().startswith(b"#!python\n")


@pytest.mark.parametrize(("before", "placeholder"), [
    (b"#!/venvseal-build/out/bin/python\nimport x\n", b"#!python\nimport x\n"),
    (b"#!/venvseal-build/out/bin/python3.11 -u\n", b"#!python3.11 -u\n"),
    (b"#!/usr/bin/env python\n", None),  # the installer left it: so does the stage
    (b"#!/bin/sh\nexec /venvseal-build/out/bin/python\n", None),
    (b"\x7fELF\x02\x01\x01", None),
])
def test_placeholder_round_trip(tmp_path: Path, before: bytes, placeholder: bytes | None) -> None:
    script = write(tmp_path / "script", "")
    script.write_bytes(before)
    changed = scripts.write_placeholders([script])
    assert script.read_bytes() == (placeholder or before)
    assert changed == ({script} if placeholder else set())
    owned: list[Path] = []

    def own(path: Path) -> Path:
        owned.append(path)
        return path

    scripts.write_interpreter([script], "/venvseal/store/x-app/bin/python", own)
    expected = before.replace(b"/venvseal-build/out", b"/venvseal/store/x-app", 1)
    assert script.read_bytes() == (expected if placeholder else before)
    assert owned == ([script] if placeholder else [])


def closure(tmp_path: Path, files: dict[str, str]) -> Forest:
    """A relinked deps path whose bin/ holds ``files``, and a closure planted beside it."""
    base = tmp_path / ("1" * 32 + "-app-deps-relinked")
    for name, text in files.items():
        write(base / "bin" / name, text).chmod(0o755)
    write(base / "pyvenv.cfg", "")
    fsutil.seal_tree(base, mtime=1)
    out = tmp_path / ("0" * 32 + "-app")
    out.mkdir()
    forest = Forest(out, base)
    forest.plant()
    return forest


def test_the_assembly_links_the_deps_scripts_back(tmp_path: Path) -> None:
    forest = closure(tmp_path, {"hello-py": "#!python\nprint(1)\n", "tool": "#!/bin/sh\n"})
    shutil.rmtree(forest.own_dir(forest.out / "bin"))  # as installing the members does
    (forest.out / "bin").mkdir()
    shipped, edited = link_shipped(forest, PYTHON)
    assert shipped == {forest.out / "bin/hello-py", forest.out / "bin/tool"}
    assert os.readlink(forest.out / "bin/tool") == f"../../{forest.base.name}/bin/tool"
    assert (forest.out / "bin/tool").read_text() == "#!/bin/sh\n"
    # The script with the placeholder is the closure's own copy; the deps path is unchanged.
    assert edited == {forest.out / "bin/hello-py"}
    assert not (forest.out / "bin/hello-py").is_symlink()
    assert (forest.out / "bin/hello-py").read_text() == f"#!{PYTHON}\nprint(1)\n"
    assert os.access(forest.out / "bin/hello-py", os.X_OK)
    assert (forest.base / "bin/hello-py").read_text() == "#!python\nprint(1)\n"
    # Without local packages bin/ is as restore_venv unfolded it: the links are there.
    other = closure(tmp_path / "other", {"tool": "#!/bin/sh\n"})
    other.own_dir(other.out / "bin")
    assert link_shipped(other, PYTHON) == ({other.out / "bin/tool"}, set())
    assert os.readlink(other.out / "bin/tool") == f"../../{other.base.name}/bin/tool"
    assert link_shipped(closure(tmp_path / "none", {}), PYTHON) == (frozenset(), set())


def test_a_local_package_shipping_the_same_file_is_refused(tmp_path: Path) -> None:
    forest = closure(tmp_path, {"tool": "#!/bin/sh\n"})
    bin_dir = forest.own_dir(forest.out / "bin")
    (bin_dir / "tool").unlink()
    write(bin_dir / "tool", "a member's\n")
    with pytest.raises(EntryPointError, match=r"bin/tool.*both by a dependency and by a local"):
        link_shipped(forest, PYTHON)
