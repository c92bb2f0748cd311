"""Fixtures of the CLI tests: a fresh `uv init --package` app."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import EXCLUDE_NEWER, PYTHON, uv_lock

from venvseal.toolchain.resolve import uv_binary

BUILD_SYSTEM = ('[build-system]\nrequires = ["setuptools==80.9.0"]\n'
                'build-backend = "setuptools.build_meta"')
APP_SOURCE = Path(__file__).resolve().parents[1] / "fixtures" / "hello-app" / "hello_init.py"


@pytest.fixture
def hello_app(tmp_path: Path) -> Path:
    """A fresh `uv init --package` app serving HTTP with the standard library (no lock)."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([str(uv_binary()), "init", "--package", "--vcs", "none", "--python",
                    PYTHON, "--name", "hello", str(tmp_path / "hello")], check=True, env=env,
                   capture_output=True)
    app = tmp_path / "hello"
    shutil.copy(APP_SOURCE, app / "src" / "hello" / "__init__.py")
    with (app / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.uv]\nexclude-newer = "{EXCLUDE_NEWER}"\n')
    use_setuptools(app)
    return app


def use_setuptools(project: Path) -> None:
    """Build ``project`` with setuptools, not uv_build: at EXCLUDE_NEWER the index has no
    uv_build that `uv init` asks for, and one installed with ``uv pip install --target``
    (the deps stage's build environment) lacks its binary ("uv-build was not properly
    installed")."""
    file = project / "pyproject.toml"
    file.write_text(re.sub(r'\[build-system\]\nrequires = \[[^]]*\]\nbuild-backend = "uv_build"',
                           BUILD_SYSTEM, file.read_text()))


@pytest.fixture
def workspace_app(hello_app: Path) -> Path:
    """The app with a workspace member ``greet`` (its own script), made by `uv init`."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([str(uv_binary()), "init", "--package", "--vcs", "none", "--python",
                    PYTHON, "packages/greet"], check=True, env=env, capture_output=True,
                   cwd=hello_app)
    use_setuptools(hello_app / "packages" / "greet")
    return hello_app


@pytest.fixture
def locked_hello_app(hello_app: Path) -> Path:
    """The app with its uv.lock (made now, pinned by exclude-newer)."""
    cache = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests")) / "uv"
    uv_lock(hello_app, cache)
    return hello_app


