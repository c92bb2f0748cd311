"""Projects built as they come, as root and as an unprivileged user (one harness for both).

A test of a real project shape takes the ``builder`` fixture: it runs once as root and once as
the user :mod:`support.unprivileged` creates, each with a store, a folder and a uv cache of its
own. Everything goes through the CLI in a child process, as a user would type it:

    def test_my_app(builder: Builder) -> None:
        project = builder.place(make_my_app)      # written into the builder's folder, its own
        assert builder.lock(project).code == 0    # uv lock, with EXCLUDE_NEWER in pyproject
        built = builder.build(project)            # deps --update-hash, then build --json
        assert built.code == 0, built.err
        # or, all three asserted: project, built = builder.place_and_build(make_my_app)
        ran = builder.venvseal("run", project, "--store", builder.store, "--", "@out@/bin/app")

Root's uv cache is the tests' shared one ($VENVSEAL_TEST_CACHE/uv); the user's is a folder of
that cache the user owns ($VENVSEAL_TEST_CACHE/uv-user), so a second run downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import PYTHON, Run
from support.unprivileged import User, ensure_user, user_python, user_uv

WHO = ("root", "user")
TEST_CACHE = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests"))


@dataclass(frozen=True)
class Builder:
    """Who builds (root or an unprivileged user), in a folder of its own."""

    who: str
    home: Path
    user: User | None  # None for root

    @property
    def store(self) -> Path:
        return self.home / "store"

    @property
    def uv_cache(self) -> Path:
        return TEST_CACHE / ("uv" if self.user is None else "uv-user")

    def run(self, *argv: str | Path, cwd: Path | None = None, timeout: float = 900,
            env: dict[str, str] | None = None) -> Run:
        """``argv`` as the builder, in ``cwd`` (default: its folder)."""
        if self.user is not None:
            return self.user.run(*argv, cwd=cwd, timeout=timeout, env=env)
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              check=False, timeout=timeout, cwd=cwd or self.home,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
        return Run(done.returncode, done.stdout, done.stderr)

    def venvseal(self, *argv: str | Path, timeout: float = 1800) -> Run:
        """The CLI as the builder (a child process)."""
        python = sys.executable if self.user is None else user_python()
        return self.run(python, "-m", "venvseal", *argv, timeout=timeout)

    def start(self, *argv: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """The CLI as the builder, in the background (``venvseal run`` of a server): its
        output (stdout and stderr together) on a pipe; the caller stops it."""
        python = sys.executable if self.user is None else user_python()
        command = [python, "-m", "venvseal", *map(str, argv)]
        environ = {**os.environ, **(env or {})}
        if self.user is not None:
            command, environ = self.user.argv(*command), self.user.env(env)
        return subprocess.Popen(command, cwd=self.home, env=environ, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def place(self, make: Callable[[Path], object], name: str = "project") -> Path:
        """A project ``make(folder)`` writes, in the builder's folder and owned by it."""
        project = self.home / name
        make(project)
        if self.user is not None:
            self.user.own(project)
        return project

    def place_and_build(self, make: Callable[[Path], object],
                        name: str = "project") -> tuple[Path, Run]:
        """A project ``make`` writes, placed, locked and built (each step asserted to
        succeed, the closure in the builder's store): the project and its build."""
        project = self.place(make, name)
        locked = self.lock(project)
        assert locked.code == 0, locked.err
        built = self.build(project)
        assert built.code == 0, built.err
        assert Path(built.json()["path"]).is_relative_to(self.store), built.out
        return project, built

    def lock(self, project: Path) -> Run:
        """``uv lock`` of ``project`` with the pinned uv and the toolchain's interpreter."""
        uv = user_uv() if self.user is not None else Path(sys.prefix) / "bin" / "uv"
        return self.run(uv, "lock", "--python", PYTHON, cwd=project,
                        env={"UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(self.uv_cache)})

    def build(self, project: Path, *extra: str | Path) -> Run:
        """``venvseal build --update-hash`` of ``project``, its out-link in the folder."""
        return self.venvseal("--json", "build", "--update-hash", "--store", self.store,
                             "--uv-cache", self.uv_cache, "--out-link", self.home / "result",
                             *extra, project)


def _user_cache(user: User) -> None:
    """The user's uv cache: made once, the user's own (chowned again if an earlier machine
    gave the user another uid)."""
    cache = TEST_CACHE / "uv-user"
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(TEST_CACHE, 0o755)
    if cache.stat().st_uid != user.uid:
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(cache)], check=True)


@pytest.fixture(params=WHO)
def builder(request: pytest.FixtureRequest) -> Iterator[Builder]:
    """Root, then an unprivileged user: each with an empty folder of its own."""
    assert os.geteuid() == 0, "these tests create a user: run them as root, as CI does"
    home = Path(tempfile.mkdtemp(prefix=f"venvseal-{request.param}-"))
    os.chmod(home, 0o755)
    user = None
    if request.param == "user":
        entry = ensure_user()
        user = User(entry.pw_name, entry.pw_uid, entry.pw_gid, home)
        user.own(home)
        _user_cache(user)
    try:
        yield Builder(request.param, home, user)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)
