"""Shared test helpers (moved from test_image.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from support import Run, uv_lock, venvseal
from support.demo import committed_rev, copy_demo
from venvseal import fsutil
from venvseal.assemble.forest import Forest
from venvseal.oci.image import ImageConfig, ImagePaths
from venvseal.oci.runtime import RuntimeClosure, RuntimeFile
from venvseal.recipe.parse import parse_recipe
from venvseal.store.core import Store, StorePath

CLOSURE = "0" * 32 + "-x-1.0"

DEPS = "3" * 32 + "-x-deps"

RELINKED = "1" * 32 + "-x-deps-relinked"

FETCH = "2" * 32 + "-src"

def make_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


SETUP = "run scripts/setup, which installs it"

def make_tree(base: Path) -> None:
    root, store = base / "root", base / "store"
    make_file(root / "usr/bin/tool", b"\x7fELF tool", 0o755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-again")
    make_file(root / "usr/lib/libx.so.1", b"library")
    os.symlink("libx.so.1", root / "usr/lib/libx.so")
    linked, closure, fetch = store / RELINKED, store / CLOSURE, store / FETCH
    make_file(linked / "lib/python3.11/site-packages/dep/__init__.py", b"VALUE = 1\n")
    make_file(linked / "lib/python3.11/site-packages/dep/edited.py", b"old\n")
    fsutil.seal_tree(linked, mtime=1)
    closure.mkdir()
    forest = Forest(closure, linked)
    forest.plant()
    forest.own_file(closure / "lib/python3.11/site-packages/dep/edited.py").write_bytes(b"new\n")
    make_file(closure / "bin/app", b"#!/venvseal/store/x/bin/python\n", 0o755)
    os.symlink("/usr/bin/tool", closure / "bin/python")
    (closure / "share/empty").mkdir(parents=True)
    make_file(closure / "app/" / ("long-name-" * 12 + ".py"), "héllo\n".encode())
    fsutil.seal_tree(closure, mtime=1)
    make_file(fetch / "data.txt", b"fetched\n")
    fsutil.seal_tree(fetch, mtime=1)

def describe(base: Path, **image: object) -> tuple[ImageConfig, ImagePaths, RuntimeClosure]:
    """The image configuration, store paths and runtime closure of the tree make_tree made
    at ``base``; ``image`` adds keys to its [image] table."""
    root, store = base / "root", base / "store"
    linked, closure, fetch = store / RELINKED, store / CLOSURE, store / FETCH
    rec = parse_recipe({
        "app": {"name": "X+y", "version": "1.0+local"},
        "toolchain": {"root": str(root), "path": ["/usr/bin", "/bin"]},
        "fetch": [{"name": "src", "url": "https://example.org/src.tar.gz"}],
        "image": {"entrypoint": ["@out@/bin/app"], "cmd": ["serve", "@src@/data.txt"],
                  "env": {"HOME": "/tmp", "SITE": "@site-packages@"}, "user": "65534",
                  "workdir": "@out@", "ports": [8000, "53/udp"],
                  "labels": {"org.opencontainers.image.title": "x"}, **image},
    }, file=base / "venvseal.toml")
    paths = ImagePaths(closure=closure, relinked=linked, fetched=(fetch,))

    def entry(path: str, kind: str, content: bytes | None = None) -> RuntimeFile:
        host = root / path.lstrip("/")
        size = len(content) if content is not None else (
            host.stat().st_size if kind == "file" else 0)
        return RuntimeFile(PurePosixPath(path), host, kind, size, "test",  # type: ignore[arg-type]
                           content)

    runtime = RuntimeClosure((
        entry("/etc", "dir"), entry("/etc/passwd", "file", b"root:x:0:0::/:/bin/sh\n"),
        entry("/usr", "dir"), entry("/usr/bin", "dir"), entry("/usr/bin/tool", "file"),
        entry("/usr/bin/tool-again", "file"), entry("/usr/lib", "dir"),
        entry("/usr/lib/libx.so", "symlink"), entry("/usr/lib/libx.so.1", "file")))
    return ImageConfig.from_recipe(rec), paths, runtime

IMAGE_TABLE = """
[image]
entrypoint = ["@out@/bin/demo-api-info"]
env = { DJANGO_SETTINGS_MODULE = "demo.settings" }
user = "65534:65534"
workdir = "@out@"
ports = [8000]
labels = { "org.opencontainers.image.title" = "demo", "dev.venvseal.closure" = "@out@" }
"""

_BUILT: dict[Path, DemoImage] = {}


def require_tool(program: str, package: str) -> str:
    """The tool's path; a failure (never a skip) telling how to install it."""
    found = shutil.which(program)
    assert found is not None, f"{program} is not installed (Debian package {package}): {SETUP}"
    return found



def fake_build(base: Path) -> tuple[ImageConfig, ImagePaths, RuntimeClosure]:
    """A toolchain root, a sealed relinked deps path, a closure linking to it (with one file
    of its own in an unfolded folder), and a fetched path."""
    make_tree(base)
    return describe(base)



@dataclass(frozen=True)
class DemoImage:
    """The example (with an [image] table) built into a store, and its image archive."""

    project: Path
    store: Path
    cache: Path
    archive: Path
    made: Run  # venvseal --json image, which also built the closure
    remade: Run  # the same again, everything reused: the image alone
    seconds: float

    @property
    def digest(self) -> str:
        digest: str = self.made.json()["digest"]
        return digest

    def image(self, out: Path, *extra: str | Path, store: Path | None = None) -> Run:
        return venvseal("--json", "image", "--store", store or self.store, "--uv-cache",
                        self.cache, self.project, "-o", out, *extra)



def demo_image(factory: pytest.TempPathFactory) -> DemoImage:
    """The example's image, made once per session (test_registry.py shares it)."""
    key = factory.getbasetemp()
    if key not in _BUILT:
        base = factory.mktemp("demo-image")
        project = copy_demo(base / "demo")
        made = subprocess.run([str(project / "make-extras-repo")], capture_output=True,
                              text=True, check=False)
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip() == committed_rev()
        recipe = project / "venvseal.toml"
        if "\n[image]\n" not in recipe.read_text():  # the example may carry its own
            with recipe.open("a") as f:
                f.write(IMAGE_TABLE)
        cache = base / "uv-cache"
        uv_lock(project, cache)
        partial = DemoImage(project, base / "store", cache, base / "app.tar",
                            Run(0, "", ""), Run(0, "", ""), 0.0)
        # The committed deps hash, declared again if Debian moved since (docs/pinning.md).
        built = venvseal("build", "--store", partial.store, "--uv-cache", cache,
                         "--update-hash-on-drift", project)
        assert built.code == 0, built.err
        first = partial.image(partial.archive)
        assert first.code == 0, first.err
        start = time.monotonic()
        again = partial.image(base / "again.tar")
        seconds = time.monotonic() - start
        print(f"\ndemo image: {seconds:.1f} s with the closure reused")
        _BUILT[key] = DemoImage(project, partial.store, cache, partial.archive, first, again,
                                seconds)
    return _BUILT[key]


def add_to_store(store: Store, source: Path, references: tuple[StorePath, ...] = ()) -> StorePath:
    """Move the tree at ``source`` into ``store`` as the valid path of the same name."""
    path = StorePath(store.root / source.name)
    store.add(path, lambda out: shutil.move(source, out), references=references)
    return path


def stored_fake_build(base: Path, store: Store, *, deps_files: dict[str, bytes] | None = None,
                      **image: object) -> tuple[ImageConfig, ImagePaths, RuntimeClosure]:
    """fake_build's tree with its relinked deps (plus ``deps_files``), closure and fetched
    path made valid paths of ``store``."""
    make_tree(base)
    linked = base / "store" / RELINKED
    if deps_files:
        fsutil.make_tree_writable(linked)
        for rel, data in deps_files.items():
            make_file(linked / rel, data)
        fsutil.seal_tree(linked, mtime=1)
    config, paths, runtime = describe(base, **image)
    relinked = add_to_store(store, paths.relinked)
    fetched = add_to_store(store, paths.fetched[0])
    closure = add_to_store(store, paths.closure, (relinked,))
    return config, ImagePaths(closure=closure, relinked=relinked, fetched=(fetched,)), runtime


def edited_closure(store: Store, paths: ImagePaths, base: Path, name: str) -> ImagePaths:
    """A copy of ``paths.closure`` named ``name`` with one more file: an app edit."""
    source = base / name
    shutil.copytree(paths.closure, source, symlinks=True)
    fsutil.make_tree_writable(source)
    make_file(source / "app" / "edited.py", b"EDITED = True\n")
    closure = add_to_store(store, source, (StorePath(paths.relinked),))
    return ImagePaths(closure=closure, relinked=paths.relinked, fetched=paths.fetched)
