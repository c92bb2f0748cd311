"""The fixed-output dependency stage: every locked dependency, installed and normalised.

``uv sync`` runs in the sandbox with network; the venv it makes is normalised (normalise.py)
and pinned by its NAR hash. The store path is named from the declared hash, and a record of
which inputs produced it lets an unchanged project skip the stage entirely.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from venvseal.deps.diagnose import DepsBuildError, DiskFullError, diagnose
from venvseal.errors import CommandError, UsageError
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock, LockError, read_lock
from venvseal.store.nar import nar_hash
from venvseal.toolchain import sandbox
from venvseal.toolchain.resolve import ResolvedToolchain, uv_binary
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

if TYPE_CHECKING:  # normalise pulls in pyelftools: import it only when building
    from venvseal.deps.normalise import NormaliseReport, StripDebug

# Bump when the stage's output for the same inputs changes (normalisation rules, uv flags).
STAGE_VERSION = "deps-2"
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Network:
    """What a networked step borrows from the host: its resolver and CA bundle."""

    resolv_conf: Path | None
    ca_file: Path | None


def _file_digest(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _inside(project: Path, lock: Lock, package: str, rel: str) -> PurePosixPath:
    """``rel`` (a path from uv.lock) if it stays inside the project, else a LockError."""
    path = PurePosixPath(rel)
    # realpath, not Path.resolve: a symlink loop is "does not exist" later, not a crash.
    resolved = Path(os.path.realpath(project / rel))
    if path.is_absolute() or not resolved.is_relative_to(os.path.realpath(project)):
        raise LockError(lock.file, f"package {package} comes from {rel}, outside the project; "
                        "move it inside the project folder so the build can see it")
    return path


def _make_cache(uv_cache: Path) -> None:
    """Create the persistent uv cache folder, or say why it cannot be one (exit 2)."""
    try:
        uv_cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"the uv cache {uv_cache} cannot be created ({err.strerror}); pass "
                         "--uv-cache DIR (or set VENVSEAL_UV_CACHE) to a folder you can "
                         "write") from err


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
                files.append((rel, _file_digest(file)))
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
    """build-system.requires of every project the assembly installs (workspace members, and
    the root when it is a package) plus the recipe's build-requires."""
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


def _uv_env(inputs: DepsInputs, network: Network) -> dict[str, str]:
    """The deps stage's environment: the sandbox's, the recipe's build variables, uv's."""
    env = {**dict(inputs.recipe.deps.env), **_uv_base_env(inputs.toolchain, network)}
    env.update({
        "UV_PROJECT_ENVIRONMENT": str(sandbox.OUT_DIR),
        "UV_LINK_MODE": "copy",
        "UV_COMPILE_BYTECODE": "0",
    })
    return env


def _uv_base_env(toolchain: ResolvedToolchain, network: Network) -> dict[str, str]:
    """What every networked uv step sees: the fixed environment, uv's cache, the CA file."""
    env = sandbox.fixed_env(toolchain.path)
    env.update({"UV_CACHE_DIR": str(sandbox.CACHE_DIR), "UV_PYTHON_DOWNLOADS": "never",
                "UV_NO_PROGRESS": "1"})
    if network.ca_file is not None:
        env["SSL_CERT_FILE"] = str(sandbox.CA_FILE)
    return env


def _uv_spec(toolchain: ResolvedToolchain, network: Network, *, uv_cache: Path,
             mounts: list[Mount], env: dict[str, str]) -> SandboxSpec:
    """A networked sandbox running the pinned uv with its persistent cache, in SRC_DIR."""
    mounts = [*mounts, Mount(host=uv_cache, target=sandbox.CACHE_DIR, writable=True),
              Mount(host=uv_binary(), target=sandbox.TOOLS_DIR / "uv")]
    if network.ca_file is not None:
        mounts.append(Mount(host=network.ca_file, target=sandbox.CA_FILE))
    return SandboxSpec(root=toolchain.root, mounts=tuple(mounts), env=env, network=True,
                       cwd=sandbox.SRC_DIR, resolv_conf=network.resolv_conf)


def _sync_argv(inputs: DepsInputs) -> list[str]:
    argv = ["uv", "sync", "--frozen", "--no-install-project", "--no-install-workspace",
            "--no-dev", "--python", str(inputs.toolchain.python)]
    for pkg in inputs.recipe.deps.exclude:
        argv += ["--no-install-package", pkg]
    for extra in inputs.recipe.deps.extras:
        argv += ["--extra", extra]
    return argv


def build_venv(inputs: DepsInputs, out: Path, *, uv_cache: Path, scratch: Path,
               runner: Sandbox, network: Network) -> NormaliseReport:
    """Install the locked dependencies into ``out`` (an empty folder) and normalise it."""
    src = scratch / "src"
    stage_sources(inputs, src)
    _make_cache(uv_cache)
    mounts = [
        # Writable: uv builds a local path dependency in place (setuptools writes its
        # egg-info and build/ next to the sources); src is this build's private copy.
        Mount(host=src, target=sandbox.SRC_DIR, writable=True),
        Mount(host=out, target=sandbox.OUT_DIR, writable=True),
    ]
    spec = _uv_spec(inputs.toolchain, network, uv_cache=uv_cache, mounts=mounts,
                    env=_uv_env(inputs, network))
    python = str(inputs.toolchain.python)
    lock_file = str(inputs.lock.file)
    # (argv, what, cache-only first): the lock check and the build backends' resolution ask
    # the index again on every run; from a warm uv cache they need not, so they try
    # --offline first and go online only when that fails (a cold cache, a new backend).
    steps = [(["uv", "lock", "--check", "--python", python], "checking uv.lock", True),
             (_sync_argv(inputs), "uv sync", False)]
    if reqs := build_requirements(inputs):
        steps.append((_build_env_argv(inputs, reqs), "installing build backends", True))
    for argv, what, offline_first in steps:
        try:
            if not offline_first or not _ran_offline(runner, spec, argv, what):
                runner.run(spec, argv, what=what)
        except CommandError as err:
            known = diagnose(err.output_tail, lock_file=lock_file, python=python)
            if isinstance(known, DiskFullError):
                known = _full_file_system(known, out=out, uv_cache=uv_cache)
            raise (known or DepsBuildError(str(err))) from err
    from venvseal.deps.normalise import normalise_venv

    # The build environment's bin/ stays: a PEP 517 backend may run its own executable
    # (uv_build runs uv-build; maturin, cmake, ninja), found on PATH by the assembly.
    return normalise_venv(out, strip_debug=_stripper(runner, spec, out))


def _full_file_system(err: DiskFullError, *, out: Path, uv_cache: Path) -> DepsBuildError:
    """``err`` (the store's file system is full) unless the uv cache's, another one, has less
    room left: uv writes to both, and its message does not say which one failed."""
    def free(path: Path) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    if os.stat(uv_cache).st_dev != os.stat(out).st_dev and free(uv_cache) < free(out):
        return DepsBuildError(f"the file system of the uv cache {uv_cache} is full (No space "
                              "left on device); free space there, or pass --uv-cache DIR on "
                              "another file system")
    return err


def _ran_offline(runner: Sandbox, spec: SandboxSpec, argv: list[str], what: str) -> bool:
    """Run ``argv`` with --offline; whether it succeeded (a stale lock is final either way)."""
    done = runner.run(spec, [*argv[:2], "--offline", *argv[2:]] if argv[1] == "lock" else
                      [*argv[:3], "--offline", *argv[3:]], what=f"{what} (offline)",
                      check=False)
    if done.returncode != 0 and "needs to be updated" in done.output:
        raise CommandError(what, argv, done.returncode, done.tail())
    return done.returncode == 0


def _build_env_argv(inputs: DepsInputs, reqs: tuple[str, ...]) -> list[str]:
    argv = ["uv", "pip", "install", "--target", str(sandbox.OUT_DIR / BUILD_ENV),
            "--python", str(inputs.toolchain.python)]
    if inputs.lock.exclude_newer:
        argv += ["--exclude-newer", inputs.lock.exclude_newer]
    return [*argv, "--", *reqs]


def _stripper(runner: Sandbox, spec: SandboxSpec, out: Path) -> StripDebug:
    """strip --strip-debug with the toolchain's own binutils, inside the sandbox, offline."""
    offline = SandboxSpec(root=spec.root, mounts=spec.mounts, env=spec.env, network=False,
                          cwd=sandbox.OUT_DIR)

    def strip(files: Sequence[Path]) -> None:
        rels = [str(sandbox.OUT_DIR / f.relative_to(out)) for f in files]
        if rels:
            runner.run(offline, ["strip", "--strip-debug", "--", *rels],
                       what="strip --strip-debug (the toolchain needs binutils)")

    return strip


__all__ = ["DepsBuildError", "DepsInputs", "Network", "build_venv", "collect_inputs",
           "stage_sources"]


def lock_project(recipe: Recipe, toolchain: ResolvedToolchain, *, uv_cache: Path,
                 runner: Sandbox, network: Network) -> None:
    """Run ``uv lock`` for the project with the toolchain's python, in the sandbox.

    The project folder is mounted writable (uv writes uv.lock there); everything else is as
    in the deps stage, network included.
    """
    _make_cache(uv_cache)
    spec = _uv_spec(toolchain, network, uv_cache=uv_cache,
                    mounts=[Mount(host=recipe.project, target=sandbox.SRC_DIR, writable=True)],
                    env=_uv_base_env(toolchain, network))
    python = str(toolchain.python)
    try:
        runner.run(spec, ["uv", "lock", "--python", python], what="uv lock")
    except CommandError as err:
        known = diagnose(err.output_tail, lock_file=str(recipe.project / "uv.lock"),
                         python=python)
        if isinstance(known, DiskFullError):  # uv lock writes the project and the cache only
            known = DepsBuildError(f"uv lock ran out of disk space (No space left on device); "
                                   f"free space for {recipe.project} and the uv cache "
                                   f"{uv_cache} (or pass --uv-cache DIR elsewhere)")
        raise (known or DepsBuildError(str(err))) from err
