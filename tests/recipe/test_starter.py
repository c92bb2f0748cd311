"""The starter recipe: which toolchain, members, imports and entrypoint, and why."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from support import write

from venvseal.errors import UsageError
from venvseal.recipe.parse import parse_recipe
from venvseal.recipe.starter import HostPython, plan_starter, satisfies, top_level_packages
from venvseal.recipe.tomlcheck import read_toml
from venvseal.recipe.uvlock import Lock, LockedPackage

HOST = HostPython(path="/usr/bin/python3.11", version=(3, 11))


@pytest.mark.parametrize(("version", "spec", "ok"), [
    ((3, 11), ">=3.11", True), ((3, 11), ">=3.12", False), ((3, 14), ">=3.12,<3.15", True),
    ((3, 15), ">=3.12,<3.15", False), ((3, 11), "==3.11.*", True), ((3, 12), "==3.11.*", False),
    ((3, 13), "~=3.12", True), ((4, 0), "~=3.12", False), ((3, 11), "!=3.11.*", False),
    ((3, 11), None, True), ((3, 11), "", True), ((3, 11), ">3.10", True),
    ((3, 11), "<=3.11", True), ((3, 11), "<3.11", False),
])
def test_requires_python(version: tuple[int, int], spec: str | None, ok: bool) -> None:
    assert satisfies(version, spec) is ok


def lock(requires: str | None, members: tuple[tuple[str, str], ...] = ()) -> Lock:
    packages = tuple(LockedPackage(name=n, version="1", source_kind="editable", source=src,
                                   has_sdist=False, has_wheels=False)
                     for n, src in (("app", "."), *members))
    return Lock(file=Path("uv.lock"), digest="", requires_python=requires, exclude_newer=None,
                members=tuple(p.name for p in packages), packages=packages)


APP = '[project]\nname = "app"\nversion = "2.0"\n[project.scripts]\nzz = "app:b"\napp = "app:a"\n'


# Each row: requires-python, the host's python, the toolchain lines, the reason's fragment.
TOOLCHAINS = [
    (">=3.11", HOST, ['python = "/usr/bin/python3.11"'], "meets requires-python (>=3.11)"),
    (">=3.12", HOST, ['debian = { suite = "trixie", packages = ["python3.13", '
                      '"python3.13-dev", "binutils"] }', 'python = "/usr/bin/python3.13"'],
     "the host's Python 3.11 does not"),
    (">=3.14", HOST, ['suite = "sid"', 'python = "/usr/bin/python3.14"'], "sid is the oldest"),
    (">=3.11", None, ['suite = "bookworm"'], "the host has no python3"),
]


@pytest.mark.parametrize(("requires", "host", "lines", "why"), TOOLCHAINS)
def test_toolchain_is_the_hosts_python_or_a_debian_suite(
        tmp_path: Path, requires: str, host: HostPython | None, lines: list[str],
        why: str) -> None:
    write(tmp_path / "pyproject.toml", APP)
    starter = plan_starter(tmp_path, lock(requires), host=host)
    for line in lines:
        assert line in starter.text
    toolchain = next(c for c in starter.choices if c.what.startswith("toolchain"))
    assert why in toolchain.why


# Each row: the locked registry packages (name, has an sdist, has wheels), whether the
# Debian toolchain gets gcc, and what the reason names.
BUILDS = [
    ([("uwsgi", True, False)], True, "no wheel for (uwsgi)"),
    ([("uwsgi", True, False), ("dkimpy", True, False), ("idna", True, True)], True,
     "(dkimpy, uwsgi)"),
    ([("idna", True, True), ("numpy", False, True)], False, "ships a Python meeting it"),
]


@pytest.mark.parametrize(("locked", "gcc", "why"), BUILDS)
def test_a_debian_toolchain_gets_gcc_when_uv_must_build_something(
        tmp_path: Path, locked: list[tuple[str, bool, bool]], gcc: bool, why: str) -> None:
    write(tmp_path / "pyproject.toml", APP)
    base = lock(">=3.14")
    extra = tuple(LockedPackage(name=n, version="1", source_kind="registry", source="index",
                                has_sdist=sdist, has_wheels=wheels)
                  for n, sdist, wheels in locked)
    starter = plan_starter(tmp_path, dataclasses.replace(base, packages=base.packages + extra),
                           host=HOST)
    assert ('"binutils", "gcc"] }' in starter.text) is gcc
    toolchain = next(c for c in starter.choices if c.what.startswith("toolchain"))
    assert toolchain.why.endswith(why)


@pytest.mark.parametrize(("kind", "layout", "copied"), [
    ("virtual", "", '[[assemble.copy]]\nfrom = "site"\nto = "app/site"\n'),
    ("virtual", "src/", '[[assemble.copy]]\nfrom = "src"\nto = "app"\n'),
    ("editable", "", None),
])
def test_a_root_that_is_not_a_package_is_copied_and_put_on_sys_path(
        tmp_path: Path, kind: str, layout: str, copied: str | None) -> None:
    # A Django site without [build-system]: uv locks its root as virtual and installs none of
    # it. In a src layout all of src/ goes (locale/ and manage.py live there too).
    write(tmp_path / "pyproject.toml", APP)
    write(tmp_path / layout / "site" / "__init__.py", "")
    write(tmp_path / "tests" / "__init__.py", "")
    root = LockedPackage(name="app", version="1", source_kind=kind, source=".",
                         has_sdist=False, has_wheels=False)
    base = lock(">=3.11")
    starter = plan_starter(tmp_path, dataclasses.replace(base, packages=(root,)), host=HOST)
    lines = ['[assemble]\npython-path = ["app"]\n', copied or "[[assemble.copy]]"]
    assert all((line in starter.text) is (copied is not None) for line in lines)
    assert 'imports = ["site"]' in starter.text
    assert "tests" not in starter.text
    recipe = tomllib.loads(starter.text)
    assert len(recipe.get("assemble", {}).get("copy", [])) == (1 if copied else 0)


def test_no_python_meets_requires_python(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", APP)
    with pytest.raises(UsageError, match=r"requires-python \(>=3.99\).*\[toolchain\]"):
        plan_starter(tmp_path, lock(">=3.99"), host=HOST)


def test_members_packages_and_entrypoint(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", APP)
    write(tmp_path / "src" / "app" / "__init__.py", "")
    write(tmp_path / "tests" / "__init__.py", "")
    write(tmp_path / "libs" / "core" / "core" / "__init__.py", "")
    starter = plan_starter(tmp_path, lock(">=3.11", (("core", "libs/core"),)), host=HOST)
    assert 'workspace = ["core"]' in starter.text
    assert 'imports = ["app", "core"]' in starter.text
    assert 'entrypoint = ["@out@/bin/app"]' in starter.text  # first by name of two
    assert "[app]" not in starter.text  # name and version come from [project]
    recipe = parse_recipe(read_toml(write(tmp_path / "venvseal.toml", starter.text)),
                          file=tmp_path / "venvseal.toml")
    assert (recipe.app.name, recipe.app.version) == ("app", "2.0")
    assert recipe.verify.imports == ("app", "core")


def test_a_dynamic_version_gets_an_app_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "app"\ndynamic = ["version"]\n')
    starter = plan_starter(tmp_path, lock(None), host=HOST, prefix="tool.venvseal.")
    assert '[tool.venvseal.app]\nname = "app"\nversion = "0.0.0"' in starter.text
    assert "[tool.venvseal.toolchain]" in starter.text


@pytest.mark.parametrize(("files", "expected"), [
    (["src/a/__init__.py", "src/b/__init__.py", "c/__init__.py"], ["a", "b"]),
    (["pkg/__init__.py", "tests/__init__.py", "docs/__init__.py"], ["pkg"]),
    (["src/not-a-name/__init__.py", "x.py"], []),
])
def test_top_level_packages(tmp_path: Path, files: list[str], expected: list[str]) -> None:
    for f in files:
        write(tmp_path / f, "")
    assert top_level_packages(tmp_path) == expected
