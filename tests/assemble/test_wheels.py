"""Offline wheels for workspace members and fetches: backends, owners, conflicts (fast).

Building wheels for real runs in the sandbox and is covered end to end (test_build_e2e.py,
test_assemble.py); here the wheels are real zip files made in tmp_path.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from support import write

from venvseal.assemble import wheels
from venvseal.assemble.sources import tree_digest
from venvseal.assemble.wheels import (
    DEFAULT_BACKEND,
    DistributionConflictError,
    WheelBuildError,
    backend_of,
    check_conflicts,
    dist_info_owners,
    wheel_destinations,
    wheel_files,
)

# what build_wheel copies ---------------------------------------------------------------------


def test_the_copy_a_build_sees_is_what_keys_the_wheel(tmp_path: Path) -> None:
    """build_wheel copies a member with wheels._ignored; the wheel's key is the member's
    tree_digest without absolute links: both leave out the same debris."""
    member = tmp_path / "rusty"
    write(member / "pyproject.toml", "[build-system]\nbuild-backend = 'maturin'\n")
    write(member / "Cargo.toml", "[package]\nname = 'rusty'\n")
    write(member / "src" / "lib.rs", "")
    key = tree_digest(member, absolute_links=False)
    write(member / "target" / "release" / "librusty.so", "a local cargo build")
    write(member / "src" / "__pycache__" / "x.pyc", "")
    (member / "result").symlink_to("/venvseal/store/x-demo")
    assert tree_digest(member, absolute_links=False) == key
    copy = tmp_path / "copy"
    shutil.copytree(member, copy, symlinks=True, ignore=wheels._ignored)
    assert sorted(p.name for p in copy.iterdir()) == ["Cargo.toml", "pyproject.toml", "src"]
    assert tree_digest(copy) == key


# backend_of ----------------------------------------------------------------------------------


def test_backend_of_a_project_without_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "from setuptools import setup\nsetup()\n")
    assert backend_of(tmp_path) == (DEFAULT_BACKEND, "")
    assert DEFAULT_BACKEND == "setuptools.build_meta:__legacy__"  # PEP 517's fallback


def test_backend_of_a_pyproject_without_build_system(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "a"\nversion = "1"\n')
    assert backend_of(tmp_path) == (DEFAULT_BACKEND, "")


def test_backend_of_requires_only(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[build-system]\nrequires = ["setuptools"]\n')
    assert backend_of(tmp_path) == (DEFAULT_BACKEND, "")


def test_backend_of_a_declared_backend_with_backend_path(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml",
          '[build-system]\nrequires = []\nbuild-backend = "backend:Hooks.v1"\n'
          'backend-path = ["_build", "tools"]\n')
    assert backend_of(tmp_path) == ("backend:Hooks.v1", "_build:tools")


def test_backend_of_flit(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml",
          '[build-system]\nrequires = ["flit_core==3.12.0"]\n'
          'build-backend = "flit_core.buildapi"\n')
    assert backend_of(tmp_path) == ("flit_core.buildapi", "")


def test_backend_of_invalid_toml_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "pyproject.toml", "[build-system\n")
    with pytest.raises(WheelBuildError, match=rf"^{file}: cannot read it"):
        backend_of(tmp_path)


# dist_info_owners ----------------------------------------------------------------------------


def record(rows: list[str]) -> str:
    return "".join(f"{row},sha256=x,1\n" if not row.endswith("RECORD") else f"{row},,\n"
                   for row in rows)


def fake_site(site: Path) -> Path:
    write(site / "six-1.16.0.dist-info" / "RECORD", record(
        ["six.py", "six-1.16.0.dist-info/METADATA", "six-1.16.0.dist-info/RECORD"]))
    write(site / "typing_extensions-4.16.0.dist-info" / "RECORD", record(
        ["typing_extensions.py", "typing_extensions-4.16.0.dist-info/RECORD"]))
    write(site / "demo_core-0.3.0.dist-info" / "RECORD", record(
        ["demo_core/__init__.py", "demo_core/models.py", "../../../bin/demo-core",
         "demo_core-0.3.0.dist-info/RECORD"]))
    write(site / "broken.dist-info" / "METADATA", "no RECORD here\n")
    return site


def test_dist_info_owners_maps_every_recorded_file(tmp_path: Path) -> None:
    owners = dist_info_owners(fake_site(tmp_path / "site-packages"))
    six, typing, core = ("six-1.16.0.dist-info", "typing_extensions-4.16.0.dist-info",
                         "demo_core-0.3.0.dist-info")
    assert owners == {
        "six.py": six,
        "six-1.16.0.dist-info/METADATA": six,
        "six-1.16.0.dist-info/RECORD": six,
        "typing_extensions.py": typing,
        "typing_extensions-4.16.0.dist-info/RECORD": typing,
        "demo_core/__init__.py": core,
        "demo_core/models.py": core,
        "../../../bin/demo-core": core,
        "demo_core-0.3.0.dist-info/RECORD": core,
    }


def test_dist_info_owners_of_an_empty_site_packages(tmp_path: Path) -> None:
    assert dist_info_owners(tmp_path) == {}


# check_conflicts -----------------------------------------------------------------------------


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A real wheel: the files, METADATA, WHEEL and a RECORD listing them all."""
    dist_info = f"{name}-{version}.dist-info"
    members = {**files, f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
               f"Version: {version}\n",
               f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"}
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
        zf.writestr(f"{dist_info}/RECORD",
                    record([*members, f"{dist_info}/RECORD"]))
    return wheel


def test_wheel_files_lists_what_the_wheel_installs_in_site_packages(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "clash", "0.1.0", {
        "clash/__init__.py": "",
        "clash-0.1.0.data/scripts/run": "#!python\n",  # goes to bin/
        "clash-0.1.0.data/data/share/doc.txt": "",  # goes to the venv's root
        "clash-0.1.0.data/platlib/clash_ext.so": "",  # goes to site-packages
        "clash-0.1.0.data/purelib/clash_compat.py": ""})
    name, files = wheel_files(wheel)
    assert name == "clash-0.1.0.dist-info"
    assert files == ["clash/__init__.py", "clash_ext.so", "clash_compat.py",
                     "clash-0.1.0.dist-info/METADATA", "clash-0.1.0.dist-info/WHEEL",
                     "clash-0.1.0.dist-info/RECORD"]


def test_wheel_destinations_follow_the_binary_distribution_format(tmp_path: Path) -> None:
    # What the assembly unfolds in the closure before uv writes there (forest.py).
    wheel = make_wheel(tmp_path, "clash", "0.1.0", {
        "clash/__init__.py": "",
        "clash-0.1.0.data/scripts/run": "#!python\n",
        "clash-0.1.0.data/data/share/doc.txt": "",
        "clash-0.1.0.data/headers/clash.h": "",
        "clash-0.1.0.data/platlib/clash_ext.so": ""})
    site = "lib/python3.11/site-packages"
    assert sorted(wheel_destinations(wheel, site)) == sorted([
        f"{site}/clash/__init__.py", "bin/run", "share/doc.txt", "include/clash.h",
        f"{site}/clash_ext.so", f"{site}/clash-0.1.0.dist-info/METADATA",
        f"{site}/clash-0.1.0.dist-info/WHEEL", f"{site}/clash-0.1.0.dist-info/RECORD"])


def test_a_purelib_file_overwriting_an_installed_file_is_refused(tmp_path: Path) -> None:
    owners = dist_info_owners(fake_site(tmp_path / "site-packages"))
    wheel = make_wheel(tmp_path / "wheels", "clash", "0.1.0",
                       {"clash-0.1.0.data/purelib/typing_extensions.py": ""})
    with pytest.raises(DistributionConflictError,
                       match=r"typing_extensions and clash both install typing_extensions\.py"):
        check_conflicts(wheel, owners)


def test_a_wheel_overwriting_an_installed_file_is_refused(tmp_path: Path) -> None:
    owners = dist_info_owners(fake_site(tmp_path / "site-packages"))
    wheel = make_wheel(tmp_path / "wheels", "clash", "0.1.0",
                       {"clash/__init__.py": "", "six.py": "# mine\n"})
    with pytest.raises(DistributionConflictError) as info:
        check_conflicts(wheel, owners)
    err = info.value
    assert (err.path, err.first, err.second) == ("six.py", "six", "clash")
    message = str(err)
    assert "distributions six and clash both install six.py" in message
    assert "[deps] exclude or [assemble] workspace" in message


def test_a_wheel_with_its_own_files_passes(tmp_path: Path) -> None:
    owners = dist_info_owners(fake_site(tmp_path / "site-packages"))
    wheel = make_wheel(tmp_path / "wheels", "demo_api", "0.2.0",
                       {"demo_api/__init__.py": "", "demo_api/views.py": ""})
    check_conflicts(wheel, owners)  # no exception


def test_a_reinstalled_distribution_shares_only_its_record_name(tmp_path: Path) -> None:
    # Two distributions never share a RECORD path; the same name and version (a dist-info
    # left behind) only shares the RECORD itself, which is not a conflict.
    owners = {"pkg-1.0.dist-info/RECORD": "pkg"}
    wheel = make_wheel(tmp_path, "pkg", "1.0", {"pkg/__init__.py": ""})
    check_conflicts(wheel, owners)
    owners["pkg-1.0.dist-info/METADATA"] = "pkg"
    with pytest.raises(DistributionConflictError, match=r"pkg-1\.0\.dist-info/METADATA"):
        check_conflicts(wheel, owners)
