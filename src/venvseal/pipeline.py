"""The orchestrator: the stages in order, each reused from the store when its inputs match.

Reads like the pipeline and never touches the file system itself: stages build, the store
writes, and the caller (the CLI) supplies the side effects through :class:`Context`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from venvseal.deps import stage as deps
from venvseal.deps.diagnose import DiskFullError
from venvseal.errors import StoreError
from venvseal.hashes import Sha256
from venvseal.recipe import model as recipe
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock, read_lock
from venvseal.store.core import (
    HashMismatchError,
    Store,
    StoreFullError,
    StorePath,
    UndeclaredHashError,
)
from venvseal.store.nar import nar_hash
from venvseal.toolchain import resolve as toolchain
from venvseal.toolchain.sandbox import Sandbox

if TYPE_CHECKING:  # these pull in pyelftools, needed only when building or comparing
    from venvseal.assemble.verify import VerifyReport
    from venvseal.deps.normalise import NormaliseReport
    from venvseal.deps.treediff import Difference


@dataclass(frozen=True, kw_only=True)
class Context:
    """The side effects a pipeline run may use, chosen by the caller."""

    store: Store
    sandbox: Sandbox
    uv_cache: Path
    network: deps.Network
    network_env: Mapping[str, str] = field(default_factory=dict)  # proxies, CA file for git
    on_step: Callable[[str], None] = field(default=lambda _msg: None)
    jobs: int = 1  # checks run side by side (never changes what is built)


@dataclass(frozen=True, kw_only=True, slots=True)
class DepsResult:
    """The deps stage's store path and how it was obtained."""

    path: StorePath
    hash: Sha256
    reused: bool
    hash_updated: bool = False
    report: NormaliseReport | None = None
    deferred: bool = False  # named by its declared hash, not (yet) in the store


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckResult:
    """Two independent builds of the deps stage, compared."""

    first: Sha256
    second: Sha256
    differences: tuple[Difference, ...]

    @property
    def ok(self) -> bool:
        return self.first == self.second


def deps_name(rec: Recipe) -> str:
    return f"{rec.app.name}-deps"


def resolve_toolchain(rec: Recipe, ctx: Context) -> toolchain.ResolvedToolchain:
    """The recipe's toolchain, its Debian root file system made first if it names one."""
    if rec.toolchain.debian is None:
        return toolchain.resolve(rec.toolchain)
    from venvseal.toolchain import debian

    root = debian.realise(rec.toolchain.debian, ctx.store, on_step=ctx.on_step)
    return toolchain.resolve(rec.toolchain, root=root)


def run_deps(rec: Recipe, ctx: Context, *, update_hash: bool = False,
             tc: toolchain.ResolvedToolchain | None = None, check: bool = True,
             lock: Lock | None = None, defer: bool = False) -> DepsResult:
    """Realise the deps stage: reuse it when its inputs are unchanged, else build and pin.

    Concurrent runs with the same inputs build once: the others wait for the store's lock on
    the inputs, then reuse what the first one added. With ``defer``, a declared hash that
    this store has never seen is trusted for the path's name alone (``deferred``): the
    caller realises it only if a later stage needs its files, and a cache hit never does.
    """
    inputs = deps.collect_inputs(rec, tc or resolve_toolchain(rec, ctx), lock=lock)
    key = "deps-" + inputs.fingerprint()
    found = _reuse_deps(rec, ctx, key, update_hash=update_hash, check=check, defer=defer)
    if found is not None:
        return found
    waiting = f"waiting for another venvseal building the dependencies of {rec.app.name}"
    with ctx.store.exclusive(key, on_wait=lambda: ctx.on_step(waiting)):
        found = _reuse_deps(rec, ctx, key, update_hash=update_hash, check=check, defer=False)
        if found is not None:
            return found
        return _build_deps(rec, ctx, inputs, key, update_hash=update_hash)


def _reuse_deps(rec: Recipe, ctx: Context, key: str, *, update_hash: bool,
                check: bool, defer: bool) -> DepsResult | None:
    """The stage's path if these inputs made it before, or a substituter has it.

    With ``check``, a path edited since it was sealed is refused (see Store.check_intact).
    """
    declared = rec.deps.hash
    cached = ctx.store.lookup_output(key)
    if cached is not None:
        info = ctx.store.query(cached)
        if info is not None and (declared == info.nar_hash or update_hash):
            if check:
                ctx.store.check_intact(cached)
            return _pinned(rec, cached, info.nar_hash, reused=True, update_hash=update_hash)
        if info is not None:
            _refuse(rec, ctx, declared, info.nar_hash)
    if declared is not None and not update_hash:
        # A fixed output is named by its declared hash alone, so a substituter may have it
        # (built elsewhere from the same inputs, if the declared hash is kept up to date).
        fixed = ctx.store.make_fixed_path(deps_name(rec), declared)
        # (A valid fixed path that these inputs did not make is checked by building.)
        if not ctx.store.is_valid(fixed):
            if defer:
                return DepsResult(path=fixed, hash=declared, reused=True, deferred=True)
            if ctx.store.substitute(fixed, declared) is not None:
                ctx.store.record_output(key, fixed)
                return DepsResult(path=fixed, hash=declared, reused=True)
    return None


def _build_deps(rec: Recipe, ctx: Context, inputs: deps.DepsInputs, key: str, *,
                update_hash: bool) -> DepsResult:
    """Build the venv in scratch space, pin it against the declared hash, add it."""
    declared = rec.deps.hash
    with ctx.store.scratch() as work:
        out = work / "venv"
        out.mkdir()
        ctx.on_step(f"building the dependency venv of {rec.app.name} (uv sync in the sandbox)")
        try:
            report = deps.build_venv(inputs, out, uv_cache=ctx.uv_cache, scratch=work,
                                     runner=ctx.sandbox, network=ctx.network)
        except DiskFullError as err:  # the store's own message, naming its root
            raise StoreFullError(ctx.store.root, deps_name(rec)) from err
        ctx.on_step("hashing the normalised venv")
        hashed = nar_hash(out)
        got = hashed.hash
        if declared != got and not update_hash:
            _refuse(rec, ctx, declared, got)
        final = ctx.store.make_fixed_path(deps_name(rec), got)
        ctx.store.add(final, lambda dest: os.rename(out, dest), expected=got, hashed=hashed,
                      inputs={"stage": "deps", "fingerprint": key})
    ctx.store.record_output(key, final)
    result = _pinned(rec, final, got, reused=False, update_hash=update_hash)
    return DepsResult(path=result.path, hash=got, reused=False,
                      hash_updated=result.hash_updated, report=report)


def _refuse(rec: Recipe, ctx: Context, declared: Sha256 | None, got: Sha256) -> None:
    """Stop with the hash to declare; the store stays as it was."""
    if declared is None:
        raise UndeclaredHashError(rec.file, f"{rec.key_prefix}deps.hash", got)
    raise HashMismatchError(ctx.store.make_fixed_path(deps_name(rec), declared), declared, got)


def _pinned(rec: Recipe, path: StorePath, got: Sha256, *, reused: bool,
            update_hash: bool) -> DepsResult:
    updated = update_hash and rec.deps.hash != got
    if updated:
        recipe.update_deps_hash(rec.file, rec.key_prefix, got.sri)
    return DepsResult(path=path, hash=got, reused=reused, hash_updated=updated)


def check_deps(rec: Recipe, ctx: Context) -> CheckResult:
    """Build the deps stage again from a cold uv cache and compare with the pinned build."""
    from venvseal.deps.treediff import compare_trees

    first = run_deps(rec, ctx)
    inputs = deps.collect_inputs(rec, resolve_toolchain(rec, ctx))
    with ctx.store.scratch() as work:
        out = work / "venv"
        out.mkdir()
        ctx.on_step("rebuilding the dependency venv from a cold uv cache")
        deps.build_venv(inputs, out, uv_cache=work / "uv-cache", scratch=work,
                        runner=ctx.sandbox, network=ctx.network)
        second = nar_hash(out).hash
        differences = () if second == first.hash else tuple(compare_trees(first.path, out))
    return CheckResult(first=first.hash, second=second, differences=differences)


def relinked_name(rec: Recipe) -> str:
    return f"{rec.app.name}-deps-relinked"


def run_relinked(rec: Recipe, ctx: Context, tc: toolchain.ResolvedToolchain,
                 deps_path: StorePath, need_deps: Callable[[], StorePath]) -> StorePath:
    """The deps venv relinked against ``tc`` and compiled (relinked.py): reused, fetched
    from a substituter, or made (``need_deps()`` realises the deps path first)."""
    from venvseal.assemble import relinked

    inputs = relinked.RelinkInputs(deps=deps_path, toolchain=tc,
                                   ignore_missing=tuple(rec.assemble.ignore_missing))
    fingerprint = inputs.fingerprint()
    path = ctx.store.make_path(relinked_name(rec), fingerprint)
    if ctx.store.substitute(path) is not None:  # valid already, or fetched
        return path
    ctx.store.check_intact(need_deps())  # it is about to be read

    def produce(out: Path) -> None:
        ctx.on_step(f"relinking and compiling the dependencies of {rec.app.name} (once per "
                    "deps path and toolchain)")
        made = relinked.make(inputs, out, logical=ctx.store.logical(path), runner=ctx.sandbox)
        ctx.on_step(f"relinked deps: {made.elf_files} ELF files resolved by the dynamic loader "
                    f"({made.edited} relinked); {made.compiled} modules compiled, "
                    f"{made.not_compiled} files skipped as not Python for this interpreter")

    ctx.store.add(path, produce, substitute=False,
                  inputs={"stage": "relinked", "fingerprint": fingerprint},
                  on_wait=lambda p: ctx.on_step(f"waiting for another venvseal building {p.name}"))
    return path


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildResult:
    """The closure's store path and how each stage was obtained."""

    path: StorePath
    deps: DepsResult
    relinked: StorePath
    fetched: tuple[StorePath, ...]
    reused: bool
    verified: VerifyReport | None = None
    substituted: tuple[StorePath, ...] = ()  # paths fetched from a substituter, not built

    @property
    def references(self) -> tuple[StorePath, ...]:
        """The store paths the closure refers to, which must stand beside it to run."""
        return (self.relinked, *self.fetched)


def run_build(rec: Recipe, ctx: Context, *, out_link: Path | None = None,
              update_hash: bool = False,
              tc: toolchain.ResolvedToolchain | None = None) -> BuildResult:
    """deps -> fetches -> offline assembly -> verify -> store (-> out-link)."""
    from venvseal.assemble import stage as assemble
    from venvseal.assemble import verify
    from venvseal.fetch import realise as fetch
    from venvseal.toolchain import trace

    lock = read_lock(rec.project)  # read once: the deps and the assembly stage both use it
    tc = tc or resolve_toolchain(rec, ctx)
    # The deps path is checked for edits only when a stage reads it (run_relinked, and
    # below); a reused closure is checked itself.
    deps_result = run_deps(rec, ctx, update_hash=update_hash, tc=tc, check=False, lock=lock,
                           defer=True)
    realised: list[DepsResult] = []

    def need_deps() -> StorePath:
        """The deps path in the store, fetched or built the first time a stage reads it."""
        if deps_result.deferred and not realised:
            realised.append(run_deps(rec, ctx, update_hash=update_hash, tc=tc, check=False,
                                     lock=lock))
        return deps_result.path

    linked = run_relinked(rec, ctx, tc, deps_result.path, need_deps)
    fetched = tuple(
        assemble.Fetched(name=f.name, path=r.path, logical=ctx.store.logical(r.path),
                         install=f.install)
        for i, f in enumerate(rec.fetch)
        for r in [fetch.realise_fetch(f, ctx.store, recipe_file=rec.file,
                                      key_prefix=rec.key_prefix, index=i,
                                      network_env=ctx.network_env)])
    inputs = assemble.collect_inputs(rec, tc, deps_result.path, linked, fetched, lock)
    path = ctx.store.make_path(f"{rec.app.name}-{rec.app.version}", inputs.fingerprint())
    fresh = ctx.store.substitute(path) is None  # neither valid nor fetched
    if fresh:
        # The assembly copies from the fetched paths. It only links to the relinked deps:
        # a damaged one is repaired for every closure at once, and verify re-hashes it.
        for used in (f.path for f in fetched):
            ctx.store.check_intact(used)
    report: list[VerifyReport] = []

    def produce(out: Path) -> None:
        ctx.on_step(f"assembling {path.name} offline")
        built = assemble.assemble(inputs, out, logical=ctx.store.logical(path),
                                  runner=ctx.sandbox,
                                  wheel_cache=partial(cached_wheel, ctx, need_deps))
        ctx.on_step("verifying the closure (imports, commands, dynamic loader)")
        # Traced once: what the checks open joins the runtime closure (oci/runtime.py).
        with ctx.store.scratch() as scratch:
            tracer = trace.Tracer.prepare(scratch)
            report.append(verify.verify(rec, out, logical=built.layout.logical,
                                        site_packages=built.layout.site_packages,
                                        values=built.values, runner=ctx.sandbox,
                                        spec=built.spec, jobs=ctx.jobs, tracer=tracer))
            if tracer is not None:
                trace.write_record(out, tracer.opened())

    ctx.store.add(path, produce, references=[linked, *(f.path for f in fetched)],
                  substitute=False,  # tried above
                  on_wait=lambda p: ctx.on_step(f"waiting for another venvseal building {p.name}"))
    if not report and path not in ctx.store.substituted:
        ctx.store.check_intact(path)  # reused: refuse it if it was edited since
    if out_link is not None:
        ctx.store.add_root(out_link, path)
    return BuildResult(path=path, deps=realised[0] if realised else deps_result,
                       relinked=linked,
                       fetched=tuple(f.path for f in fetched),
                       reused=not report, verified=report[0] if report else None,
                       substituted=tuple(ctx.store.substituted))


def cached_wheel(ctx: Context, need_deps: Callable[[], StorePath], name: str, key: str,
                  build: Callable[[Path, Path], Path]) -> Path:
    """A project's wheel, kept in the store under ``key`` so an app edit does not rebuild
    the workspace members it did not touch. Never substituted: a local build is quicker
    than asking a cache for every member."""
    path = ctx.store.make_path(f"{name}-wheel", key)

    def produce(out: Path) -> None:
        # Building reads the deps path's build environment: it must be as sealed.
        deps_path = need_deps()
        ctx.store.check_intact(deps_path, within=deps.BUILD_ENV)
        ctx.on_step(f"building {name} into a wheel")
        out.mkdir()
        with ctx.store.scratch() as work:
            wheel = build(work, deps_path)
            os.rename(wheel, out / wheel.name)

    ctx.store.add(path, produce, substitute=False, inputs={"stage": "wheel", "key": key})
    found = list(path.glob("*.whl"))
    if len(found) != 1:  # a reused path someone changed (a deletion leaves no other mark)
        raise StoreError(f"{path} should hold one wheel and holds {len(found)}: it was "
                         "changed after it was made; run 'venvseal gc', which removes it "
                         "(no root keeps it), then build again")
    return found[0]


def run_closure(tc: toolchain.ResolvedToolchain, ctx: Context, path: StorePath,
                argv: list[str], *, env: Mapping[str, str]) -> int:
    """Run ``argv`` with the closure at its logical path and the toolchain as /; its status."""
    from venvseal.assemble.textedit import expand
    from venvseal.store.core import STORE_DIR
    from venvseal.toolchain import sandbox as sb

    logical = ctx.store.logical(path)
    values = {"out": str(logical), "python": str(logical / "bin" / "python")}
    full_env = {**sb.fixed_env(tc.path), **env,
                "PATH": f"{logical}/bin:" + ":".join(map(str, tc.path))}
    spec = sb.SandboxSpec(root=tc.root, mounts=(sb.Mount(host=ctx.store.root, target=STORE_DIR),),
                          env=full_env, network=True, cwd=logical,
                          resolv_conf=ctx.network.resolv_conf)
    return ctx.sandbox.call(spec, [expand(a, values) for a in argv])
