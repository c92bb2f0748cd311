"""Fixtures of the CLI tests: a fresh `uv init --package` app."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import EXCLUDE_NEWER, PYTHON, uv_lock

from venvseal.toolchain.resolve import uv_binary

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
    return app


@pytest.fixture
def locked_hello_app(hello_app: Path) -> Path:
    """The app with its uv.lock (made now, pinned by exclude-newer)."""
    cache = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests")) / "uv"
    uv_lock(hello_app, cache)
    return hello_app


