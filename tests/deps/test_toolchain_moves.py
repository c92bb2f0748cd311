"""A toolchain that moves under a warm uv cache: issue 15's libpq-dev 15.18 -> 15.20, replayed.

A toolchain root is prepared from the host's (hard links, so it costs seconds), the example's
psycopg-c is built in it from its sdist, then the root's libpq-dev is "upgraded": its version
in the dpkg database and ``PG_VERSION_NUM`` in pg_config.h, which psycopg-c compiles in as
``psycopg_c.pq.__build_version__``. The warm uv cache must not hand back the wheel built
before; the declared hash must then break with a message naming the package, and
--update-hash-on-drift must re-declare it; a cold build must agree with the warm one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import PYTHON, Run, venvseal
from support.apps import make_app

from venvseal.deps import dpkg, uvcache

pytestmark = pytest.mark.slow

PG_CONFIG_H = "usr/include/postgresql/pg_config.h"
ROOT_DIRS = ("usr", "etc")
ROOT_LINKS = ("bin", "lib", "lib64", "sbin")


def prepare_root(root: Path) -> None:
    """A toolchain root with the host's files (hard links) and its own dpkg database."""
    root.mkdir()
    for name in ROOT_DIRS:
        subprocess.run(["cp", "-al", f"/{name}", str(root / name)], check=True)
    for name in ROOT_LINKS:
        subprocess.run(["cp", "-a", f"/{name}", str(root / name)], check=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    shutil.copyfile("/var/lib/dpkg/status", root / "var/lib/dpkg/status")


def replace_file(file: Path, old: str, new: str) -> None:
    """Edit ``file`` in a new inode: it is a hard link to the host's file."""
    text = file.read_text()
    assert old in text, f"{old!r} not in {file}"
    file.unlink()
    file.write_text(text.replace(old, new))


def upgrade_libpq(root: Path, old: str, new: str) -> None:
    """What apt does to the toolchain, as far as a build can see it."""
    status = (root / "var/lib/dpkg/status").read_text()
    stanza = re.search(r"^Package: libpq-dev\n(?:.+\n)*?Version: (.+)\n", status, re.M)
    assert stanza is not None and stanza[1] == old
    replace_file(root / "var/lib/dpkg/status", stanza[0],
                 stanza[0].replace(f"Version: {old}", f"Version: {new}"))
    num = re.search(r"#define PG_VERSION_NUM (\d+)", (root / PG_CONFIG_H).read_text())
    assert num is not None
    replace_file(root / PG_CONFIG_H, num[0], f"#define PG_VERSION_NUM {int(num[1]) + 2}")


def build_version(venv: Path) -> int:
    """psycopg_c.pq.__build_version__ of the deps venv: the libpq headers it compiled with."""
    site = venv / "lib/python3.11/site-packages"
    done = subprocess.run([PYTHON, "-B", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import psycopg; print(psycopg.pq.__build_version__)", str(site)],
                          capture_output=True, text=True, check=False,
                          env={"PSYCOPG_IMPL": "c", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@dataclass(frozen=True)
class Moved:
    project: Path
    old: str
    new: str
    first: Run
    first_version: int
    lock_before: str
    refused: Run
    redeclared: Run


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Moved:
    base = tmp_path_factory.mktemp("moved")
    root = base / "root"
    prepare_root(root)
    project = make_app(base / "app", base / "lock-cache", dependencies=("psycopg[c]==3.3.3",),
                       member=False)
    recipe = project / "venvseal.toml"
    recipe.write_text(recipe.read_text().replace('root = "/"', f'root = "{root}"'))
    store, cache = base / "store", base / "uv-cache"

    def deps(*extra: str) -> Run:
        return venvseal("deps", "--store", store, "--uv-cache", cache, *extra, project)

    first = deps("--json", "--update-hash")
    assert first.code == 0, first.err
    lock_before = (project / "venvseal.lock").read_text()
    old = dpkg.installed(root)["libpq-dev"].version
    new = old + "+moved1"
    upgrade_libpq(root, old, new)
    refused = deps()
    redeclared = deps("--json", "--update-hash-on-drift")
    return Moved(project, old, new, first, build_version(Path(first.json()["path"])),
                 lock_before, refused, redeclared)


def test_the_lock_records_the_packages_the_build_read(moved: Moved) -> None:
    lock = moved.lock_before
    assert f'"libpq-dev" = "{moved.old}"' in lock
    for name in ("libpq5", "libc6-dev", "python3.11-dev"):
        assert f'"{name}" = ' in lock, name
    assert f'hash = "{moved.first.json()["hash"]}"' in lock
    assert moved.first.json()["lock_file"] == str(moved.project / "venvseal.lock")


def test_a_moved_toolchain_breaks_the_hash_and_says_why(moved: Moved) -> None:
    # Had the warm cache handed back psycopg-c built against the old headers, the hash would
    # have matched and this would have succeeded.
    run = moved.refused
    assert run.code == 1, run.err
    message = run.error
    assert f"{moved.project / 'venvseal.toml'}: deps.hash: hash mismatch" in message
    assert f"libpq-dev {moved.old} -> {moved.new}" in message
    assert f"'venvseal deps --update-hash {moved.project}'" in message
    assert "Traceback" not in run.err


def test_update_hash_on_drift_redeclares_with_a_notice(moved: Moved) -> None:
    run = moved.redeclared
    assert run.code == 0, run.err
    data = run.json()
    assert f"libpq-dev {moved.old} -> {moved.new}" in data["drift"]
    assert data["lock_file"] == str(moved.project / "venvseal.lock")
    assert data["hash_updated"] is True and data["reused"] is False
    assert data["hash"] != moved.first.json()["hash"]
    assert f'hash = "{data["hash"]}"' in (moved.project / "venvseal.toml").read_text()
    assert f'"libpq-dev" = "{moved.new}"' in (moved.project / "venvseal.lock").read_text()
    # Compiled against the moved headers, not taken from the warm cache.
    assert build_version(Path(data["path"])) == moved.first_version + 2


def test_a_cold_build_agrees_with_the_warm_one(moved: Moved, tmp_path: Path) -> None:
    copy = shutil.copytree(moved.project, tmp_path / "app")
    cold = venvseal("--json", "deps", "--store", tmp_path / "store", "--uv-cache",
                    tmp_path / "uv-cache", copy)
    assert cold.code == 0, cold.err
    assert cold.json()["hash"] == moved.redeclared.json()["hash"]
    # Without drift, --update-hash-on-drift changes nothing.
    again = venvseal("--json", "deps", "--store", tmp_path / "store", "--uv-cache",
                     tmp_path / "uv-cache", "--update-hash-on-drift", copy)
    assert again.code == 0, again.err
    assert again.json()["hash_updated"] is False and again.json()["lock_file"] is None
    assert again.json()["drift"] == []


def test_the_notice_names_what_moved(moved: Moved, tmp_path: Path) -> None:
    # The human rendering of the drift: a copy whose lock still records the old version.
    copy = shutil.copytree(moved.project, tmp_path / "app")
    (copy / "venvseal.lock").write_text(moved.lock_before)
    base = moved.project.parent  # the fixture's store has the venv: it is reused
    run = venvseal("deps", "--store", base / "store", "--uv-cache", base / "uv-cache",
                   "--update-hash-on-drift", copy)
    assert run.code == 0, run.err
    notice = next(line for line in run.err.splitlines() if line.startswith("notice:"))
    assert f"{copy / 'venvseal.toml'}: deps.hash was declared with" in notice
    assert f"libpq-dev {moved.old} -> {moved.new}" in notice
    assert f"{copy / 'venvseal.lock'}: recorded what deps.hash" in run.err


def test_each_toolchain_has_its_own_build_cache_and_shares_downloads(moved: Moved) -> None:
    cache = moved.project.parent / "uv-cache"
    builds = sorted((cache / uvcache.BUILDS_DIR).iterdir())
    assert len(builds) == 2  # before and after the move
    for own in builds:
        assert (own / "sdists-v11").is_dir() and not (own / "sdists-v11").is_symlink()
        # Every download bucket the pinned uv made is the shared one: if uv renamed one,
        # update uvcache.SHARED_BUCKETS.
        private = [p.name for p in own.iterdir() if not p.is_symlink() and p.is_dir()
                   and re.fullmatch(r"(wheels|archive|simple|flat-index|git)-v\d+", p.name)]
        assert private == [], private
        assert {p.name for p in own.iterdir() if p.is_symlink()} == set(uvcache.SHARED_BUCKETS)
