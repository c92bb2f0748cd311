"""Helpers shared by the test modules: running the CLI, snapshotting a store, locking projects.

Test modules import these with ``from support import ...`` (``tests/conftest.py`` puts
``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvseal.cli.main import main
from venvseal.store.core import Store
from venvseal.toolchain.resolve import uv_binary

PYTHON = "/usr/bin/python3.11"
EXCLUDE_NEWER = "2026-11-01T00:00:00Z"
ERROR_PREFIX = "venvseal: error: "


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def host_recipe(name: str, version: str, rest: str = "") -> str:
    """A recipe of app ``name`` ``version`` on the host's toolchain (root "/", :data:`PYTHON`)
    with its deps hash still to declare, then ``rest`` (more tables)."""
    return (f'[app]\nname = "{name}"\nversion = "{version}"\n\n'
            f'[toolchain]\nroot = "/"\npython = "{PYTHON}"\n\n[deps]\nhash = ""\n{rest}')


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def toml_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


@dataclass(frozen=True)
class Run:
    """One venvseal invocation: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data

    @property
    def error(self) -> str:
        """The error lines, without their prefix."""
        return "\n".join(line.removeprefix(ERROR_PREFIX) for line in self.err.splitlines()
                         if line.startswith(ERROR_PREFIX))


@dataclass(frozen=True)
class BuiltProject:
    """A test project, its store and uv cache, and its first (successful) build."""

    project: Path
    store: Path
    cache: Path
    built: Run

    def build(self, project: Path) -> Run:
        """``venvseal build`` of ``project`` (this one, or a changed copy) in the same store."""
        return venvseal("build", "--store", self.store, "--uv-cache", self.cache, project)


def venvseal(*argv: str | Path) -> Run:
    """Run the CLI in this process, leaving the logging set-up as it found it."""
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("venvseal")
    handlers, level = logger.handlers[:], logger.level
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in argv])
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    return Run(code, out.getvalue(), err.getvalue())


def venvseal_process(*argv: str | Path, timeout: float = 600) -> Run:
    """Run the CLI as a child process: for ``venvseal run``, whose command writes to fd 1."""
    done = subprocess.run([sys.executable, "-m", "venvseal", *map(str, argv)],
                          capture_output=True, text=True, check=False, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)


def store_state(root: Path) -> dict[str, bytes | None]:
    """The store's paths by name, and every bookkeeping file but the locks, with its bytes.

    Workspace members' wheels (``*-wheel`` paths) are left out: each is a complete path the
    assembly keeps for the next build even when a later step fails, as Nix keeps the
    dependencies it built. Tests that compare states check them with ``venvseal verify``.
    """
    state: dict[str, bytes | None] = {}
    for entry in sorted(root.iterdir()) if root.exists() else []:
        if not entry.name.startswith("."):
            if not entry.name.endswith("-wheel"):
                state[entry.name] = None
        elif entry.name != ".locks":
            for f in sorted(entry.rglob("*")):
                if "-wheel" not in f.name:
                    state[f.relative_to(root).as_posix()] = (f.read_bytes() if f.is_file()
                                                             else None)
    return state


def store_paths(root: Path) -> list[str]:
    return sorted(e.name for e in root.iterdir() if not e.name.startswith("."))


def empty_store(root: Path) -> dict[str, bytes | None]:
    Store(root).close()
    return store_state(root)


def uv_lock(project: Path, cache: Path) -> None:
    """Lock ``project`` with the pinned uv and the toolchain's interpreter."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(cache)}
    done = subprocess.run([str(uv_binary()), "lock", "--python", PYTHON], cwd=project, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_text(name: str) -> str:
    """A test data file under ``tests/fixtures/`` (uv.lock texts shared by several tests)."""
    return (FIXTURES / name).read_text(encoding="utf-8")
