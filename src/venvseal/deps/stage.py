"""The fixed-output dependency stage: every locked dependency, installed and normalised.

``uv sync`` runs in the sandbox with network, with a uv cache of the toolchain's own for what
it builds (uvcache.py); the venv it makes is normalised (normalise.py) and pinned by its NAR
hash. The store path is named from the declared hash, and a record of which inputs produced it
lets an unchanged project skip the stage entirely.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from venvseal.deps import uvcache
from venvseal.deps.diagnose import DepsBuildError, DiskFullError, diagnose
from venvseal.deps.inputs import (
    BUILD_ENV,
    STAGE_VERSION,
    DepsInputs,
    build_requirements,
    collect_inputs,
    stage_sources,
)
from venvseal.elf.loadercheck import DEFAULT_LOADER
from venvseal.errors import CommandError, UsageError
from venvseal.recipe.model import Recipe
from venvseal.toolchain import sandbox
from venvseal.toolchain.resolve import ResolvedToolchain, uv_binary
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

if TYPE_CHECKING:  # normalise pulls in pyelftools: import it only when building
    from venvseal.deps.normalise import NormaliseReport
    from venvseal.deps.strip import GuardedStrip
    from venvseal.store.nar import NarResult


@dataclass(frozen=True, kw_only=True, slots=True)
class Network:
    """What a networked step borrows from the host: its resolver and CA bundle."""

    resolv_conf: Path | None
    ca_file: Path | None


def _make_cache(uv_cache: Path) -> None:
    """Create the persistent uv cache folder, or say why it cannot be one (exit 2)."""
    try:
        uv_cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"the uv cache {uv_cache} cannot be created ({err.strerror}); pass "
                         "--uv-cache DIR (or set VENVSEAL_UV_CACHE) to a folder you can "
                         "write") from err


def _uv_env(inputs: DepsInputs, network: Network, cache: PurePosixPath) -> dict[str, str]:
    """The deps stage's environment: the sandbox's, the recipe's build variables, uv's."""
    env = {**dict(inputs.recipe.deps.env), **_uv_base_env(inputs.toolchain, network, cache)}
    env.update({
        "UV_PROJECT_ENVIRONMENT": str(sandbox.OUT_DIR),
        "UV_LINK_MODE": "copy",
        "UV_COMPILE_BYTECODE": "0",
    })
    return env


def _uv_base_env(toolchain: ResolvedToolchain, network: Network,
                 cache: PurePosixPath) -> dict[str, str]:
    """What every networked uv step sees: the fixed environment, uv's cache (``cache``,
    inside the mounted cache folder: see uvcache.py), the CA file."""
    env = sandbox.fixed_env(toolchain.path)
    env.update({"UV_CACHE_DIR": str(sandbox.CACHE_DIR / cache), "UV_PYTHON_DOWNLOADS": "never",
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
    argv = ["uv", "sync", "--locked", "--no-install-project", "--no-install-workspace",
            "--no-dev", "--python", str(inputs.toolchain.python)]
    for pkg in inputs.recipe.deps.exclude:
        argv += ["--no-install-package", pkg]
    for extra in inputs.recipe.deps.extras:
        argv += ["--extra", extra]
    return argv


# uv's lines worth showing while a sync runs (UV_NO_PROGRESS keeps it to these summaries).
_PROGRESS = re.compile(r"\s*(Resolved|Prepared|Installed|Audited|Downloading|Downloaded|"
                       r"Building|Built|Uninstalled) ")


def _uv_progress(on_progress: Callable[[str], None] | None
                 ) -> Callable[[str], None] | None:
    if on_progress is None:
        return None
    report = on_progress

    def on_line(line: str) -> None:
        if _PROGRESS.match(line):
            report(f"uv: {line.strip()}")
    return on_line


def build_venv(inputs: DepsInputs, out: Path, *, uv_cache: Path, scratch: Path,
               runner: Sandbox, network: Network,
               on_progress: Callable[[str], None] | None = None) -> NormaliseReport:
    """Install the locked dependencies into ``out`` (an empty folder) and normalise it,
    but for the search for build paths in files it did not edit: :func:`hash_venv` does that
    as it reads them to hash the venv, and must follow.

    ``on_progress`` hears uv's own progress lines (resolved, downloading, building, built,
    installed) as uv prints them: a cold sync can take minutes."""
    src = scratch / "src"
    stage_sources(inputs, src)
    cache = _toolchain_cache(uv_cache, inputs.toolchain, inputs.recipe.deps.env)
    mounts = [
        # Writable: uv builds a local path dependency in place (setuptools writes its
        # egg-info and build/ next to the sources); src is this build's private copy.
        Mount(host=src, target=sandbox.SRC_DIR, writable=True),
        Mount(host=out, target=sandbox.OUT_DIR, writable=True),
    ]
    spec = _uv_spec(inputs.toolchain, network, uv_cache=uv_cache, mounts=mounts,
                    env=_uv_env(inputs, network, cache))
    python = str(inputs.toolchain.python)
    lock_file = str(inputs.lock.file)
    # (argv, what): the lock check (sync --locked) and the build backends' resolution ask
    # the index again on every run; from a warm uv cache they need not, so they run with
    # --offline first (all in one sandbox) and each goes online only when that fails (a cold
    # cache, a new backend). One `uv sync --locked` instead of `uv lock --check` and
    # `uv sync --frozen` saves a uv start and a resolution (~0.1 s warm, issue 16).
    todo = [(_sync_argv(inputs), "uv sync")]
    if reqs := build_requirements(inputs):
        todo.append((_build_env_argv(inputs, reqs), "installing build backends"))
    try:
        while todo:
            done = _offline_steps(runner, spec, todo)
            if done == len(todo):
                break
            argv, what = todo[done]
            runner.run(spec, argv, what=what, on_line=_uv_progress(on_progress))
            todo = todo[done + 1:]
    except CommandError as err:
        known = diagnose(err.output_tail, lock_file=lock_file, python=python)
        if isinstance(known, DiskFullError):
            known = _full_file_system(known, out=out, uv_cache=uv_cache)
        raise (known or DepsBuildError(str(err))) from err
    from venvseal.deps.normalise import normalise_venv

    # BUILD_ENV/bin stays: PEP 517 backends run executables from it (uv_build its uv-build,
    # maturin its maturin), found on PATH as a frontend's isolated environment puts them. Its
    # scripts' shebangs name the toolchain's python, the same wherever the path is mounted.
    return normalise_venv(out, strip=guarded_strip(runner, spec, out, scratch))


def hash_venv(out: Path, report: NormaliseReport,
              seal_mtime: int | None) -> tuple[NarResult, NormaliseReport]:
    """The NAR hash of the venv :func:`build_venv` made in ``out`` (sealed with
    ``seal_mtime``), its normalisation finished in the same read: see hash_normalised."""
    from venvseal.deps.normalise import hash_normalised

    return hash_normalised(out, report, seal_mtime=seal_mtime)


def _toolchain_cache(uv_cache: Path, toolchain: ResolvedToolchain,
                     env: Mapping[str, str]) -> PurePosixPath:
    """This toolchain's uv cache inside ``uv_cache`` (made if needed), relative to it."""
    _make_cache(uv_cache)
    key = uvcache.build_key(toolchain.identity, python=toolchain.python, path=toolchain.path,
                            env=env)
    try:
        return uvcache.prepare(uv_cache, key)
    except OSError as err:
        raise UsageError(f"the uv cache {uv_cache} cannot be prepared ({err}); pass "
                         "--uv-cache DIR (or set VENVSEAL_UV_CACHE) to a folder you can "
                         "write") from err


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


# The exit status of the offline script when step i failed: _FAILED + i.
_FAILED = 90


def _offline_steps(runner: Sandbox, spec: SandboxSpec,
                   steps: Sequence[tuple[list[str], str]]) -> int:
    """Run the uv ``steps`` with --offline, in order, in one sandbox (a sandbox start less per
    step), up to the first that fails; how many succeeded. A stale lock is final."""
    script = "\n".join(f"{shlex.join([*argv[:3], '--offline', *argv[3:]])} || exit {_FAILED + i}"
                       for i, (argv, _what) in enumerate(steps))
    done = runner.run(spec, ["sh", "-c", script], check=False,
                      what=" and ".join(what for _argv, what in steps) + " (offline)")
    if done.returncode == 0:
        return len(steps)
    failed = done.returncode - _FAILED
    if not 0 <= failed < len(steps):
        return 0  # the sandbox itself failed: each step runs online, and says why
    argv, what = steps[failed]
    if "needs to be updated" in done.output:
        raise CommandError(what, argv, done.returncode, done.tail())
    return failed


def _build_env_argv(inputs: DepsInputs, reqs: tuple[str, ...]) -> list[str]:
    argv = ["uv", "pip", "install", "--target", str(sandbox.OUT_DIR / BUILD_ENV),
            "--python", str(inputs.toolchain.python)]
    if inputs.lock.exclude_newer:
        argv += ["--exclude-newer", inputs.lock.exclude_newer]
    return [*argv, "--", *reqs]


# Where the guarded strip keeps the originals (a folder of the build's scratch space).
KEEP_DIR = sandbox.BUILD_ROOT / "keep"
# strip.guarded's steps in one sandbox (three sandbox starts cost 0.1-0.2 s of a warm stage,
# issue 16): the loader's verdict on each file ($0 --verify exits 0 for an executable, 2 for
# a shared object, 1 for what it cannot map), a copy of each one it accepts, strip, then
# each copied file it no longer accepts put back and listed in $1/kept.
_GUARDED_STRIP = """\
ld=$0 keep=$1
shift
n=0
for f in "$@"; do
  n=$((n + 1))
  "$ld" --verify "$f" >/dev/null 2>&1
  case $? in 0|2) cp -- "$f" "$keep/$n" || exit 1;; esac
done
strip --strip-debug -- "$@" || exit 1
n=0
for f in "$@"; do
  n=$((n + 1))
  [ -e "$keep/$n" ] || continue
  "$ld" --verify "$f" >/dev/null 2>&1
  case $? in 0|2) ;; *) cp -f -- "$keep/$n" "$f" && printf '%s\\0' "$f" >>"$keep/kept" || exit 1;;
  esac
done
"""


def guarded_strip(runner: Sandbox, spec: SandboxSpec, out: Path, scratch: Path
                   ) -> GuardedStrip:
    """strip --strip-debug with the toolchain's own binutils, guarded by its dynamic loader
    (see strip.py), in one offline sandbox; originals kept in ``scratch`` meanwhile."""
    def strip(files: Sequence[Path]) -> set[Path]:
        inside = {str(sandbox.OUT_DIR / f.relative_to(out)): f for f in files}
        with tempfile.TemporaryDirectory(dir=scratch, prefix="unstripped-") as keep:
            offline = SandboxSpec(
                root=spec.root, env=spec.env, network=False, cwd=sandbox.OUT_DIR,
                mounts=(*spec.mounts, Mount(host=Path(keep), target=KEEP_DIR, writable=True)))
            runner.run(offline, ["sh", "-c", _GUARDED_STRIP, str(DEFAULT_LOADER),
                                 str(KEEP_DIR), *inside],
                       what="strip --strip-debug (the toolchain needs binutils)")
            kept = Path(keep, "kept")
            names = kept.read_bytes().decode().split("\0") if kept.exists() else []
        return {inside[name] for name in names if name in inside}

    return strip


__all__ = ["BUILD_ENV", "STAGE_VERSION", "DepsBuildError", "DepsInputs", "Network",
           "build_requirements", "build_venv", "collect_inputs", "hash_venv", "stage_sources"]


def lock_project(recipe: Recipe, toolchain: ResolvedToolchain, *, uv_cache: Path,
                 runner: Sandbox, network: Network) -> None:
    """Run ``uv lock`` for the project with the toolchain's python, in the sandbox.

    The project folder is mounted writable (uv writes uv.lock there); everything else is as
    in the deps stage, network included.
    """
    cache = _toolchain_cache(uv_cache, toolchain, {})
    spec = _uv_spec(toolchain, network, uv_cache=uv_cache,
                    mounts=[Mount(host=recipe.project, target=sandbox.SRC_DIR, writable=True)],
                    env=_uv_base_env(toolchain, network, cache))
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
