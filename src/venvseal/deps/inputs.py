"""The deps stage's inputs: what uv reads, with digests, and the private copy it gets.

``DepsInputs.fingerprint`` keys the stage's cache; :func:`stage_sources` copies exactly the
files it covers, so uv cannot see anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock, LockError, read_lock
from venvseal.store.nar import nar_hash
from venvseal.toolchain.resolve import ResolvedToolchain

STAGE_VERSION = "deps-4"  # deps-4: bin/ keeps what distributions ship there
# Files besides pyproject.toml that change what uv resolves or installs.
UV_CONFIG_FILES = ("uv.toml",)
# Inside the output: build backends for the offline assembly stage (not part of the venv).
BUILD_ENV = "venvseal-build-env"
# PEP 517: a project without [build-system] is built with setuptools' legacy backend.
DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0",)


@dataclass(frozen=True, kw_only=True, slots=True)
class DepsInputs:
    """Everything the stage's output depends on; ``fingerprint`` keys its cache."""

    recipe: Recipe
    lock: Lock
    toolchain: ResolvedToolchain
    files: tuple[tuple[str, str], ...]  # (path relative to the project, sha256) sorted

    def fingerprint(self) -> str:
        """A digest of every input; equal fingerprints give the same output."""
        deps = self.recipe.canonical()["deps"]
        deps = {k: v for k, v in deps.items() if k != "hash"}
        doc = {
            "stage": STAGE_VERSION,
            "name": self.recipe.app.name,
            "deps": deps,
            "python": str(self.toolchain.python),
            "path": [str(p) for p in self.toolchain.path],
            "toolchain": self.toolchain.identity,
            "uv": self.toolchain.uv_version,
            "files": self.files,
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _file_digest(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def pyproject_digest(file: Path) -> str:
    """The digest of what uv reads in a pyproject.toml: the parsed file without
    ``[tool.venvseal]`` (the recipe's deps settings are an input of their own), written
    canonically, so an ``[image]`` or ``[verify]`` edit does not re-run the stage. A file
    TOML cannot parse is digested as bytes (uv says what is wrong with it)."""
    raw = file.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return _file_digest(file)
    tool = data.get("tool")
    if isinstance(tool, dict):
        tool.pop("venvseal", None)
    # Dates and times keep their TOML type, so "2026-01-01" (a string) and 2026-01-01 differ.
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=lambda v: {type(v).__name__: v.isoformat()})
    return "toml:" + hashlib.sha256(blob.encode()).hexdigest()


def _inside(project: Path, lock: Lock, package: str, rel: str) -> PurePosixPath:
    """``rel`` (a path from uv.lock) if it stays inside the project, else a LockError."""
    path = PurePosixPath(rel)
    # realpath, not Path.resolve: a symlink loop is "does not exist" later, not a crash.
    resolved = Path(os.path.realpath(project / rel))
    if path.is_absolute() or not resolved.is_relative_to(os.path.realpath(project)):
        raise LockError(lock.file, f"package {package} comes from {rel}, outside the project; "
                        "move it inside the project folder so the build can see it")
    return path


def _declared_members(project: Path) -> set[str]:
    """The member folders the root pyproject.toml declares ([tool.uv.workspace] globs).

    Staged besides the lock's members: with a stale lock (another project's, say) uv must
    still see the whole workspace, to say the lock is out of date rather than fail to build.
    """
    try:
        data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return set()  # uv says what is wrong with it
    tool = data.get("tool")
    uv = tool.get("uv") if isinstance(tool, dict) else None
    workspace = uv.get("workspace") if isinstance(uv, dict) else None
    if not isinstance(workspace, dict):
        return set()

    def matches(key: str) -> set[Path]:
        patterns = workspace.get(key)
        found: set[Path] = set()
        for pattern in patterns if isinstance(patterns, list) else []:
            with contextlib.suppress(TypeError, ValueError, NotImplementedError):
                found.update(project.glob(pattern))  # "", "/abs" and non-strings raise
        return found

    real = os.path.realpath(project)
    return {path.relative_to(project).as_posix()
            for path in matches("members") - matches("exclude")
            if (path / "pyproject.toml").is_file()
            and Path(os.path.realpath(path)).is_relative_to(real)}


def collect_inputs(recipe: Recipe, toolchain: ResolvedToolchain, *,
                   lock: Lock | None = None) -> DepsInputs:
    """Read uv.lock (unless given) and list every project file uv sees, with its digest.

    That is uv.lock, the pyproject.toml (and uv.toml) of the root and of each workspace
    member (their code is not installed by this stage), and the whole of every local path
    dependency, which is.
    """
    project = recipe.project
    lock = lock or read_lock(project)
    # Checked like path dependencies: staging copies these files by their lock paths, so a
    # member at "../../x" would otherwise be read from, and written to, outside the build.
    dirs = {"."} | {_inside(project, lock, p.name, p.source).as_posix()
                    for p in lock.local_packages()} | _declared_members(project)
    files: list[tuple[str, str]] = [("uv.lock", lock.digest)]
    for d in sorted(dirs):
        for name in ("pyproject.toml", *UV_CONFIG_FILES):
            rel = (PurePosixPath(d) / name).as_posix()
            file = project / rel
            if file.is_file():
                files.append((rel, pyproject_digest(file) if name == "pyproject.toml"
                              else _file_digest(file)))
    for dep in lock.path_dependencies():
        rel = _inside(project, lock, dep.name, dep.source).as_posix()
        if not (project / rel).exists():
            raise LockError(lock.file, f"package {dep.name} comes from {rel}, which does not "
                            "exist; restore it or run 'uv lock' again")
        files.append((rel, "nar:" + nar_hash(project / rel).hash.base16))
    return DepsInputs(recipe=recipe, lock=lock, toolchain=toolchain, files=tuple(sorted(files)))


def stage_sources(inputs: DepsInputs, dest: Path) -> None:
    """Copy exactly the files the fingerprint covers, so uv cannot see anything else."""
    for rel, _digest in inputs.files:
        source, target = inputs.recipe.project / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)


def build_requirements(inputs: DepsInputs) -> tuple[str, ...]:
    """Every workspace member's build-system.requires plus the recipe's build-requires."""
    reqs: set[str] = set(inputs.recipe.deps.build_requires)
    for member in inputs.lock.installed_members():  # the root too, if a package
        file = inputs.recipe.project / member.source / "pyproject.toml"
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
            raise LockError(file, f"cannot read the workspace member's pyproject.toml ({err})"
                            ) from err
        system = data.get("build-system", {})
        reqs.update(system.get("requires", DEFAULT_BUILD_REQUIRES) if system else
                    DEFAULT_BUILD_REQUIRES)
    return tuple(sorted(reqs))


