"""venvseal init and finding the recipe: what is written, what is refused, from where."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import uv_lock, venvseal, write

PYPROJECT = ('[project]\nname = "app"\nversion = "1.2"\nrequires-python = ">=3.11"\n'
             '[project.scripts]\napp = "app:main"\n')
LOCK = ('version = 1\nrequires-python = ">=3.11"\n\n[[package]]\nname = "app"\n'
        'version = "1.2"\nsource = { editable = "." }\n')


def project(root: Path) -> Path:
    write(root / "pyproject.toml", PYPROJECT)
    write(root / "uv.lock", LOCK)
    write(root / "src" / "app" / "__init__.py", "def main(): pass\n")
    return root


def test_init_writes_a_recipe_and_says_why(tmp_path: Path) -> None:
    app = project(tmp_path / "app")
    run = venvseal("init", str(app), "--no-hash")
    assert run.code == 0, run.err
    text = (app / "venvseal.toml").read_text()
    assert 'hash = ""' in text and 'imports = ["app"]' in text
    assert f"wrote {app / 'venvseal.toml'}:" in run.err
    assert "image entrypoint: @out@/bin/app: [project.scripts] names it" in run.err
    assert "declare it with 'venvseal build --update-hash'" in run.err
    shown = venvseal("--json", "show", str(app))
    assert json.loads(shown.out)["app"]["name"] == "app"


def test_init_into_pyproject(tmp_path: Path) -> None:
    app = project(tmp_path / "app")
    assert venvseal("init", str(app), "--no-hash", "--pyproject").code == 0
    text = (app / "pyproject.toml").read_text()
    assert text.startswith(PYPROJECT) and "[tool.venvseal.deps]" in text
    assert not (app / "venvseal.toml").exists()
    assert venvseal("show", str(app)).code == 0


# Each row: how the folder differs, the arguments, the fragments of the one error line.
BAD_INIT = [
    ("no pyproject", {"pyproject.toml": None}, [], ["has no pyproject.toml", "uv init"]),
    ("no uv.lock", {"uv.lock": None}, [], ["no uv.lock", "uv lock"]),
    ("recipe exists", {"venvseal.toml": "# mine\n"}, [], ["already holds a recipe", "--force"]),
    ("recipe in pyproject", {"pyproject.toml": PYPROJECT + "[tool.venvseal.deps]\n"},
     ["--force"], ["already holds a recipe", "remove [tool.venvseal]"]),
    ("python too new", {"pyproject.toml": PYPROJECT.replace(">=3.11", ">=3.99"),
                        "uv.lock": LOCK.replace(">=3.11", ">=3.99")}, [],
     ["requires-python (>=3.99)", "[toolchain] by hand"]),
]


@pytest.mark.parametrize(("case", "changes", "argv", "fragments"), BAD_INIT,
                         ids=[r[0] for r in BAD_INIT])
def test_bad_init_gives_one_clear_line(tmp_path: Path, case: str,
                                       changes: dict[str, str | None], argv: list[str],
                                       fragments: list[str]) -> None:
    app = project(tmp_path / "app")
    for name, text in changes.items():
        if text is None:
            (app / name).unlink()
        else:
            write(app / name, text)
    before = {p: p.read_bytes() for p in app.rglob("*") if p.is_file()}
    run = venvseal("init", str(app), "--no-hash", *argv)
    assert run.code == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("venvseal: error: "), run.err
    for fragment in fragments:
        assert fragment in lines[0]
    assert {p: p.read_bytes() for p in app.rglob("*") if p.is_file()} == before


def test_force_replaces_a_recipe(tmp_path: Path) -> None:
    app = project(tmp_path / "app")
    write(app / "venvseal.toml", "# mine\n")
    assert venvseal("init", str(app), "--no-hash", "--force").code == 0
    assert "[deps]" in (app / "venvseal.toml").read_text()


def test_recipe_is_found_in_a_parent_folder(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    app = project(tmp_path / "app")
    write(app / "venvseal.toml", "")  # [app] from [project]
    monkeypatch.chdir(app / "src" / "app")
    run = venvseal("show")
    assert run.code == 0, run.err
    assert f"{app / 'venvseal.toml'}: ok (app 1.2)" in run.out


def test_no_recipe_anywhere_up_names_the_folder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    run = venvseal("show")
    assert run.code == 2 and f"in {tmp_path / 'a' / 'b'}" in run.err


@pytest.mark.parametrize(("recipe", "pyproject", "expected"), [
    ("", PYPROJECT, "app 1.2"),
    ('[app]\nname = "other"\n', PYPROJECT, "other 1.2"),
    ('[app]\nversion = "9"\n', PYPROJECT, "app 9"),
    ('[app]\nname = "x"\nversion = "3"\n', "", "x 3"),
])
def test_app_name_and_version_default_to_project(tmp_path: Path, recipe: str, pyproject: str,
                                                 expected: str) -> None:
    write(tmp_path / "venvseal.toml", recipe)
    write(tmp_path / "pyproject.toml", pyproject)
    run = venvseal("show", str(tmp_path))
    assert run.code == 0, run.err
    assert f"ok ({expected})" in run.out


def test_no_app_and_no_project_says_both_ways(tmp_path: Path) -> None:
    write(tmp_path / "venvseal.toml", "[deps]\n")
    run = venvseal("show", str(tmp_path))
    assert run.code == 2 and "add [app]" in run.err and "[project] name and version" in run.err


# A Django-like site that is not a package (no [build-system]): uv installs none of it, so
# init copies its code into the closure and puts it on sys.path. Flat, and in a src layout
# whose src/ also holds data files beside the package (a Django site's locale/).
SITE_LAYOUTS = ["", "src/"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", SITE_LAYOUTS)
def test_init_alone_builds_a_site_that_is_not_a_package(tmp_path: Path, layout: str) -> None:
    cache = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests")) / "uv"
    site = tmp_path / "site"
    write(site / "pyproject.toml", '[project]\nname = "site"\nversion = "1.0"\n'
          'requires-python = ">=3.11"\ndependencies = []\n')
    write(site / layout / "blog" / "__init__.py",
          "import pathlib\nLOCALE = pathlib.Path(__file__).parent.parent / 'locale'\n")
    write(site / layout / "locale" / "de.po", 'msgid "post"\n')
    write(site / "tests" / "__init__.py", "raise SystemExit('tests are not copied')\n")
    uv_lock(site, cache)
    store = tmp_path / "store"
    init = venvseal("init", site, "--store", store, "--uv-cache", cache)
    assert init.code == 0, init.err
    build = venvseal("build", site, "--store", store, "--uv-cache", cache)
    assert build.code == 0, build.err  # [verify] imports = ["blog"], as init wrote it
    closure = Path(build.out.strip().splitlines()[-1])
    assert (closure / "app" / "blog" / "__init__.py").is_file()
    assert not (closure / "app" / "tests").exists()
    assert (closure / "app" / "locale" / "de.po").is_file() is (layout == "src/")
