"""The root project is installed as a real distribution when uv treats it as a package (slow).

A ``uv init --package`` app as uv 0.13 writes it (src layout, a console script, the uv_build
backend), locked at test time, builds with a recipe of only ``[app]``, ``[toolchain]`` and
the deps hash: its dist-info, its ``bin/`` script and ``importlib.metadata`` all work; as
root (the module's fixture) and as an unprivileged user (the builder fixture, in a store of
its own).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import (
    EXCLUDE_NEWER,
    Run,
    host_recipe,
    store_state,
    uv_lock,
    venvseal,
    venvseal_process,
    write,
)
from support.projects import Builder

pytestmark = pytest.mark.slow

# As `uv init --package --name hello` writes it, with the build backend's range moved to the
# releases before EXCLUDE_NEWER and the resolution pinned.
PYPROJECT = f"""\
[project]
name = "hello"
version = "0.1.0"
description = "Add your description here"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["idna==3.10"]

[project.scripts]
hello = "hello:main"

[build-system]
requires = ["uv_build>=0.13.0,<0.14.0"]
build-backend = "uv_build"

[tool.uv]
exclude-newer = "{EXCLUDE_NEWER}"
"""

INIT = """\
import idna


def main() -> None:
    print("Hello from hello!", idna.encode("b\\u00fccher.example").decode())
"""

RECIPE = host_recipe("hello", "0.1.0")


def write_project(root: Path) -> Path:
    write(root / "pyproject.toml", PYPROJECT)
    write(root / "README.md", "")
    write(root / ".python-version", "3.11\n")
    write(root / ".gitignore", "__pycache__/\n")
    write(root / "src" / "hello" / "__init__.py", INIT)
    write(root / "venvseal.toml", RECIPE)
    return root


def make_project(root: Path, lock_cache: Path) -> Path:
    write_project(root)
    uv_lock(root, lock_cache)
    return root


@dataclass(frozen=True)
class App:
    project: Path
    store: Path
    cache: Path
    built: Run

    def run(self, project: Path, *command: str) -> Run:
        return venvseal_process("run", project, "--store", self.store, "--uv-cache", self.cache,
                                "--", *command)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    root = tmp_path_factory.mktemp("root-project")
    cache = root / "uv-cache"
    project = make_project(root / "hello", cache)
    store = root / "store"
    built = venvseal("--json", "build", "--update-hash", "--store", store, "--uv-cache", cache,
                     project)
    return App(project=project, store=store, cache=cache, built=built)


def test_a_uv_init_package_app_is_installed_with_its_script(app: App) -> None:
    assert app.built.code == 0, app.built.err
    closure = Path(app.built.json()["path"])
    site = closure / "lib/python3.11/site-packages"
    dist_info = site / "hello-0.1.0.dist-info"
    assert (dist_info / "RECORD").is_file()
    assert "hello = hello:main" in (dist_info / "entry_points.txt").read_text()
    assert (site / "hello" / "__init__.py").read_text() == INIT
    script = closure / "bin" / "hello"
    assert script.read_text().startswith(f"#!/venvseal/store/{closure.name}/bin/python")
    run = app.run(app.project, "@out@/bin/hello")
    assert run.code == 0, run.err
    assert run.out.strip() == "Hello from hello! xn--bcher-kva.example"
    version = app.run(app.project, "@python@", "-c",
                      "import importlib.metadata as m; print(m.version('hello'))")
    assert version.out.strip() == "0.1.0", version.err


def test_an_out_link_in_the_project_does_not_change_the_closure(app: App) -> None:
    # The root project's source is hashed for its wheel: an out-link into the store beside
    # pyproject.toml must not count, or every build would make a new closure.
    first = venvseal("--json", "build", "--store", app.store, "--uv-cache", app.cache,
                     "--out-link", app.project / "result", app.project)
    assert first.code == 0, first.err
    second = venvseal("--json", "build", "--store", app.store, "--uv-cache", app.cache,
                      "--out-link", app.project / "result", app.project)
    assert second.code == 0, second.err
    assert first.json()["path"] == second.json()["path"] == app.built.json()["path"]
    assert second.json()["reused"] is True


def test_the_workspace_key_names_the_root_and_refuses_others_as_a_recipe_error(
        app: App, tmp_path: Path) -> None:
    assert app.built.code == 0, app.built.err
    project = tmp_path / "hello"
    shutil.copytree(app.project, project, symlinks=True)
    with (project / "venvseal.toml").open("a") as f:
        f.write('\n[assemble]\nworkspace = ["helo"]\n')
    before = store_state(app.store)
    run = venvseal("build", "--store", app.store, "--uv-cache", app.cache, project)
    assert run.code == 2, run.err
    assert "assemble.workspace names helo, not a package of the uv workspace" in run.error
    assert "the packages it can install are: hello; fix the list" in run.error
    assert store_state(app.store) == before
    # Naming the root installs it, as leaving the key out does.
    (project / "venvseal.toml").write_text((project / "venvseal.toml").read_text().replace(
        '"helo"', '"hello"'))
    built = venvseal("--json", "build", "--store", app.store, "--uv-cache", app.cache, project)
    assert built.code == 0, built.err
    assert (Path(built.json()["path"]) / "bin" / "hello").is_file()


@pytest.mark.parametrize("builder", ["user"], indirect=True)  # root: the tests above
def test_a_user_builds_the_app_with_its_script(builder: Builder) -> None:
    assert builder.user is not None
    project, built = builder.place_and_build(write_project, "hello")
    closure = Path(built.json()["path"])
    assert closure.stat().st_uid == builder.user.uid
    assert built.json()["deps_reused"] is False  # its own store: built, not reused
    site = closure / "lib/python3.11/site-packages"
    assert "hello = hello:main" in (site / "hello-0.1.0.dist-info" / "entry_points.txt"
                                    ).read_text()
    assert (site / "hello" / "__init__.py").read_text() == INIT
    assert (closure / "bin" / "hello").read_text().startswith(
        f"#!/venvseal/store/{closure.name}/bin/python")
    common = ("--store", builder.store, "--uv-cache", builder.uv_cache)
    run = builder.venvseal("run", project, *common, "--", "@out@/bin/hello")
    assert run.code == 0, run.err
    assert run.out.strip() == "Hello from hello! xn--bcher-kva.example"
    version = builder.venvseal("run", project, *common, "--", "@python@", "-c",
                               "import importlib.metadata as m; print(m.version('hello'))")
    assert version.out.strip() == "0.1.0", version.err
    # The out-link the build left beside the project does not change the closure.
    again = builder.venvseal("--json", "build", *common, "--out-link", project / "result",
                             project)
    assert again.code == 0, again.err
    assert again.json()["path"] == str(closure) and again.json()["reused"] is True
