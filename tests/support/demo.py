"""Shared test helpers (moved from test_build_e2e.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import (
    Run,
    uv_lock,
    venvseal,
    venvseal_process,
)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"

ELF_MAGIC = b"\x7fELF"


def committed_rev() -> str:
    match = re.search(r'^rev = "([0-9a-f]{40})"', (DEMO / "venvseal.toml").read_text(), re.M)
    assert match is not None, "examples/demo/venvseal.toml pins no git rev"
    return match[1]



def copy_demo(dest: Path) -> Path:
    """A copy of the example as a fresh clone has it: no build/, no result, no uv.lock."""
    shutil.copytree(DEMO, dest, ignore=shutil.ignore_patterns(
        "build", "result", "uv.lock", "__pycache__", "*.pyc"))
    return dest



@dataclass(frozen=True)
class Demo:
    """The example's copy, its store and uv cache, and its first build."""

    project: Path
    store: Path
    cache: Path
    out_link: Path
    first: Run
    seconds: float

    @property
    def path(self) -> Path:
        return Path(self.first.json()["path"])

    def build(self, project: Path | None = None, *extra: str | Path,
              store: Path | None = None) -> Run:
        return venvseal("--json", "build", "--store", store or self.store, "--uv-cache",
                        self.cache, *extra, project or self.project)

    def run(self, *argv: str, env: dict[str, str] | None = None) -> Run:
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return venvseal_process("run", self.project, "--store", self.store, "--uv-cache",
                                self.cache, *flags, "--", *argv)



@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    base = tmp_path_factory.mktemp("demo")
    project = copy_demo(base / "demo")
    made = subprocess.run([str(project / "make-extras-repo")], capture_output=True, text=True,
                          check=False)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == committed_rev(), "make-extras-repo made another commit"
    cache = base / "uv-cache"
    uv_lock(project, cache)
    out_link = base / "result"
    start = time.monotonic()
    # As scripts/example: the committed hash holds for the toolchain in venvseal.lock; on a
    # machine whose Debian moved since, it is declared again, with a notice (docs/pinning.md).
    first = venvseal("--json", "build", "--store", base / "store", "--uv-cache", cache,
                     "--out-link", out_link, "--update-hash-on-drift", project)
    seconds = time.monotonic() - start
    print(f"\ndemo: first build (deps from a cold store) took {seconds:.1f} s")
    return Demo(project=project, store=base / "store", cache=cache, out_link=out_link,
                first=first, seconds=seconds)



def elf_files(tree: Path) -> list[Path]:
    """Every ELF file seen through ``tree``, its links into other store paths followed (as
    the dynamic loader opens them: ``$ORIGIN`` is the folder the path goes through)."""
    found: dict[str, Path] = {}
    for folder, _dirs, files in sorted(os.walk(tree, followlinks=True)):
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file() and os.path.realpath(path) not in found:
                with path.open("rb") as f:
                    if f.read(4) == ELF_MAGIC:
                        found[os.path.realpath(path)] = path
    return sorted(found.values())
